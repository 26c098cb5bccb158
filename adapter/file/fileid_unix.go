//go:build unix

package file

import (
	"os"
	"syscall"
)

// idOf returns the identity (device and inode) of a file, nil if unknown.
func idOf(fi os.FileInfo) *fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	// The conversions are needed where Dev or Ino are not uint64 (darwin).
	return &fileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}
}
