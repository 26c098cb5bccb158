// Package loomtest is what the project's tests import to run a Loom router in-process.
// It forwards to package [server] (adapter/loom/server), which holds the router;
// everything here is an alias of it, so a *loomtest.Server is a *server.Server.
package loomtest

import "github.com/loombridge/loombridge/adapter/loom/server"

type (
	Server    = server.Server
	Config    = server.Config
	Stats     = server.Stats
	Auth      = server.Auth
	TokenRule = server.TokenRule
	CertRule  = server.CertRule
)

// Backlog and chunk-buffer policies.
const (
	FullDropNewest = server.FullDropNewest
	FullDropOldest = server.FullDropOldest
	FullBlock      = server.FullBlock
	FullDrop       = server.FullDrop
)

// Auth modes.
const (
	ModeDisabled = server.ModeDisabled
	ModeToken    = server.ModeToken
	ModeMTLS     = server.ModeMTLS
	ModeBoth     = server.ModeBoth
)

// Start is [server.Start].
func Start(cfg Config) (*Server, error) { return server.Start(cfg) }
