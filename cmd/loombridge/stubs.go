package main

import (
	"context"
	"fmt"
	"io"
)

// Placeholders until the commands land; each moves to a file of its own.
func runPublish(_ context.Context, _ []string, _ io.Reader, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "publish: not yet")
	return exitFailure
}

func runConsume(_ context.Context, _ []string, _ io.Reader, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "consume: not yet")
	return exitFailure
}

func runDev(_ context.Context, _ []string, _ io.Reader, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "dev: not yet")
	return exitFailure
}
