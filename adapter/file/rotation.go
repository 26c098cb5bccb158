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

// rotatedName is a rotated file's name, <topic>-<time stamp>-<seq>.jsonl,
// with the parts it sorts by.
type rotatedName struct {
	name, stamp string // the stamp has a fixed width: it sorts as text
	seq         int
}

func (a rotatedName) before(b rotatedName) bool {
	return a.stamp < b.stamp || a.stamp == b.stamp && a.seq < b.seq
}

// parseRotated parses name as a rotated file of the topic file path. A
// strict parse: another topic's files ("t-x.jsonl" beside "t.jsonl") are not
// taken for rotated ones.
func parseRotated(path, name string) (rotatedName, bool) {
	name = filepath.Base(name)
	rest, ok := strings.CutPrefix(name, strings.TrimSuffix(filepath.Base(path), ".jsonl")+"-")
	if !ok {
		return rotatedName{}, false
	}
	rest, ok = strings.CutSuffix(rest, ".jsonl")
	i := strings.LastIndexByte(rest, '-')
	if !ok || i < 0 {
		return rotatedName{}, false
	}
	seq, err := strconv.Atoi(rest[i+1:])
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
		if r, ok := parseRotated(t.path, e.Name()); ok {
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
