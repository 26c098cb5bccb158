//go:build !unix

package file

import "os"

// idOf returns nil: without an inode number the identity is unknown, and a
// stored offset is applied to the current file.
func idOf(os.FileInfo) *fileID { return nil }
