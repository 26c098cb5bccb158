// Package file is a Watermill adapter that writes messages to files and reads
// them back.
//
// # Publisher
//
// The Publisher has two formats.
//
// "jsonl" appends one JSON object per message to <dir>/<topic>.jsonl. The line
// format is described at [MarshalLine]. Topics must be a single, plain file
// name element (no path separators, not "." or "..") whose file names fit in
// 255 bytes: at most 249 bytes, or 201 with rotation. Many goroutines may
// Publish on one Publisher at once; each line is written with a single write
// under a mutex, so lines never interleave. A write that fails part-way
// (disk full) is cut off again by truncating the file to its size before
// the write, so the next line does not start mid-line; if even that fails
// the file is closed and the next Publish ends the torn line with a
// newline on reopening.
//
// Two Publisher instances (or processes) writing the same file are NOT
// supported. The file is opened with O_APPEND and each line is one write(2),
// which on a local Linux filesystem in practice keeps whole lines intact, but
// POSIX only promises atomicity for pipe writes up to PIPE_BUF (4 KiB), NFS
// does not honour O_APPEND, and each instance would rotate the file on its own
// idea of its size and age, renaming the other's file under it.
//
// Rotation (jsonl): before a write, if the current file is older than max_age
// or the write would make it larger than max_bytes, the file is fsynced
// (unless fsync is "never"), closed and renamed to
//
//	<topic>-<UTC time as 20060102T150405.000000000Z>-<seq>.jsonl
//
// where seq counts rotations of this Publisher (starting at 1), and a new
// <topic>.jsonl is started. A single line bigger than max_bytes gets a file of
// its own. Age is only checked when publishing: an idle file is rotated by
// the next Publish, not by a timer.
//
// "raw" writes one file per message, holding only the payload, at the path
// produced by the name_template (text/template with the fields of
// [RawName]). The result must be a relative path inside dir without ".."
// elements; anything else is rejected, and all file operations go through
// an [os.Root] so symlinks cannot escape dir either. The payload is written to
// ".<name>.<seq>-<random>.tmp" in the same directory, fsynced per policy,
// closed, hard-linked to its final name and removed, so no reader ever sees
// a partial file under its final name. An existing file is never replaced
// (a rename would: {{.Seq}} starts at 1 again after a restart): Publish
// fails with an error wrapping [io/fs.ErrExist] that names the file. The
// directory must therefore support hard links. A crash can leave dot-temp
// files behind; they are safe to delete.
//
// Fsync policy: "always" fsyncs the file (and, after creating or renaming a
// file, its directory) before Publish returns; "interval" fsyncs from a
// background goroutine every fsync_interval (the goroutine is stopped by
// Close); "never" leaves it to the operating system. Only "always" survives
// power loss without losing acknowledged publishes; all three survive a
// process crash (kill -9) because the kernel keeps written data.
//
// # Subscriber
//
// The Subscriber reads <dir>/<topic>.jsonl, either once from the start (the
// output channel is closed after the last line is acked, which suits replay)
// or, with follow, like tail -f: it polls for new data every poll_interval and
// notices when the file was rotated (renamed away and recreated) or truncated.
// After a rotation it finishes the old file, then every file rotated after
// it (several rotations within one poll, or while the reader held a message),
// oldest first by the time stamp and sequence in their names, then the new
// <topic>.jsonl from the start. A rotated file deleted before the reader got
// to it is not read.
// Messages are delivered one at a time in file order; the next is sent only
// after Ack. After Nack the same message is sent again after
// nack_resend_delay.
//
// After each Ack the byte offset past that line is stored in
// <offset_dir>/<topic>.jsonl.offset (written to a temp file, fsynced and
// renamed), so a restarted Subscriber continues after the last acked line.
// With the offset it stores the identity (device and inode) of the file it
// belongs to. If <topic>.jsonl is another file at restart (it was rotated
// while no Subscriber ran), the offset is not applied to it: the rotated
// file with that identity is looked up among <topic>-*.jsonl and finished
// first, then the files rotated after it, then <topic>.jsonl from the
// start; if the rotated file is gone, <topic>.jsonl is read from the start.
// An inode number reused by a new file after the
// old one was deleted is taken for the old file. Offset files without an
// identity (written by older versions, or where the system has no inode
// numbers) keep the old behaviour: the offset is applied to the current
// file, and reset to 0 when the file is shorter than it.
//
// A line that is not a valid message (bad JSON, missing uuid or payload, bad
// base64, longer than max_line_bytes, or a final line without newline at the
// end of a file that is no longer written) is logged with its file and line
// number, published to the DeadLetter publisher when one is configured
// (payload: the raw line; metadata "file", "line", "error" and "reason", a
// [DeadLetterReason]: "invalid", "too_long" or "torn") and skipped. In
// follow mode a final line without a newline is incomplete and is waited for,
// never parsed.
//
// # Configuration
//
// [PublisherConfig] and [SubscriberConfig] carry koanf tags, the keys of
// their YAML form. The constructors apply the defaults (the Default*
// constants) and then call Validate, which reports every invalid field at
// once, in field order, each error starting with its key. Both types count
// what they do: see [Publisher.Stats] and [Subscriber.Stats].
package file
