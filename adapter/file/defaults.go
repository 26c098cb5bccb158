package file

// SetDefaults fills the fields left zero with their defaults, as the constructor
// does, so a configuration can be checked without building anything.
func (c *PublisherConfig) SetDefaults() { c.setDefaults() }

// SetDefaults fills the fields left zero with their defaults, as the constructor
// does, so a configuration can be checked without building anything.
func (c *SubscriberConfig) SetDefaults() { c.setDefaults() }
