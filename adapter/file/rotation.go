package file

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The names of a topic's files: the current file <topic>.jsonl, and the
// rotated files <topic>-<UTC time stamp>-<seq>.jsonl. The Publisher writes
// them with currentFileName and rotatedFileName, the Subscriber recognises
// them with parseRotated; nothing else builds or takes apart these names.

// jsonlExt ends every JSONL file name.
const jsonlExt = ".jsonl"

// rotationStamp is the time stamp in rotated file names; fixed width, so
// names sort by time (the subscriber relies on it).
const rotationStamp = "20060102T150405.000000000Z"

// maxRotatedSuffix is the longest part of a rotated file name after the
// topic: the separators, the stamp and the largest seq.
const maxRotatedSuffix = len("-" + rotationStamp + "-18446744073709551615" + jsonlExt)

// currentFileName is the name of the file a topic is written to.
func currentFileName(topic string) string { return topic + jsonlExt }

// rotatedFileName is the name a topic's current file is renamed to when it
// is rotated at time ts (converted to UTC); seq tells apart rotations with
// the same stamp. parseRotated takes it apart again.
func rotatedFileName(topic string, ts time.Time, seq uint64) string {
	return topic + "-" + ts.UTC().Format(rotationStamp) + "-" + strconv.FormatUint(seq, 10) + jsonlExt
}

// rotatedName is a rotated file's name, as written by rotatedFileName,
// with the parts it sorts by.
type rotatedName struct {
	name, stamp string // the stamp has a fixed width: it sorts as text
	seq         uint64
}

func (a rotatedName) before(b rotatedName) bool {
	return a.stamp < b.stamp || a.stamp == b.stamp && a.seq < b.seq
}

// parseRotated parses name (its directory is ignored) as a rotated file of
// topic, the inverse of rotatedFileName. A strict parse: another topic's
// files ("t-x.jsonl" beside "t.jsonl") are not taken for rotated ones.
func parseRotated(topic, name string) (rotatedName, bool) {
	name = filepath.Base(name)
	rest, ok := strings.CutPrefix(name, topic+"-")
	if !ok {
		return rotatedName{}, false
	}
	rest, ok = strings.CutSuffix(rest, jsonlExt)
	i := strings.LastIndexByte(rest, '-')
	if !ok || i < 0 {
		return rotatedName{}, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil {
		return rotatedName{}, false
	}
	if _, err := time.Parse(rotationStamp, rest[:i]); err != nil {
		return rotatedName{}, false
	}
	return rotatedName{name: name, stamp: rest[:i], seq: seq}, true
}

// listRotated lists the topic's rotated files, oldest first.
func (t *tail) listRotated() ([]rotatedName, error) {
	dir := filepath.Dir(t.path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("file subscriber: list rotated files in %s: %w", dir, err)
	}
	var rotated []rotatedName
	for _, e := range entries {
		if r, ok := parseRotated(t.topic, e.Name()); ok {
			rotated = append(rotated, r)
		}
	}
	slices.SortFunc(rotated, func(a, b rotatedName) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	return rotated, nil
}
