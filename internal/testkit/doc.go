// Package testkit holds what several packages' tests need alike: a buffer
// that goroutines may write while a test reads it, and client certificates
// signed by a throw-away CA. Only tests import it.
package testkit
