// Package server is a Loom-compatible router that runs in-process: for development
// (the CLI's "loombridge dev" command), for tests and benchmarks, and as the embedded
// default Loom connection of YAML pipelines. It is not the real Loom server, loomd.
//
// It mimics the documented behaviour of loomd as the project's Loom protocol note
// describes it (wire version 4): one UDP port serves both carriers (QUIC with ALPN
// "loom/1", HTTP/3 with POST /stream), messages are routed per room by rendezvous
// hashing of key partitions onto consumer streams, one message is in flight per
// consumer stream, producers are read one message at a time, and the backlog and
// chunk-buffer policies, size limits and token/mTLS authorisation follow loomd's
// settings. Unlike loomd it keeps no state beyond the process, and where loomd's
// documentation is silent it makes the simple choice documented on the relevant code.
//
// Without a configured certificate it makes a fresh self-signed one for 127.0.0.1, ::1
// and localhost; clients trust it through [Server.ClientTLS], [Server.CertPEM] or a
// file written by [Server.WriteCA].
package server
