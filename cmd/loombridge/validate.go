package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func runValidate(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("validate", "validate -c FILE (or validate FILE)", stderr)
	path := fs.String("c", "", "configuration file (required)")
	fs.StringVar(path, "config", "", "same as -c")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	switch rest := fs.Args(); {
	case len(rest) == 1 && *path == "":
		*path = rest[0] // validate FILE, as one would guess
	case len(rest) > 0:
		fmt.Fprintf(stderr, "loombridge validate: unexpected arguments: %v (give the file once, with -c FILE or as FILE)\n", rest)
		return exitUsage
	case *path == "":
		fmt.Fprintln(stderr, "loombridge validate: -c FILE is required (or validate FILE)")
		return exitUsage
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok, %d pipeline(s)\n", *path, len(cfg.Pipelines))
	return exitOK
}

func loadConfig(path string) (*pipelines.Config, error) {
	return pipelines.Load(path, pipelines.LoadOptions{Kinds: kinds.Builtin()})
}

// printConfigErrors prints every problem, one a line.
func printConfigErrors(w io.Writer, path string, err error) {
	var es pipelines.Errors
	if !errors.As(err, &es) {
		fmt.Fprintf(w, "%s: %v\n", path, err)
		return
	}
	printErrorList(w, fmt.Sprintf("%s: %d problem(s):", path, len(es)), es)
}

// printErrorList prints a heading and every problem under it, one a line.
func printErrorList(w io.Writer, heading string, es pipelines.Errors) {
	fmt.Fprintln(w, heading)
	for _, e := range es {
		fmt.Fprintf(w, "  %s\n", e)
	}
}
