// Package transport is FileShare's wire: one TCP listener per node, shared by
// every kind of traffic the node speaks.
//
// # Multiplexing
//
// Every connection opens with one byte that names its stream kind:
//
//	StreamRaft  (0x01)  hashicorp/raft's NetworkTransport (master adapts a Listener)
//	StreamRPC   (0x02)  the msgpack RPC protocol of this package (Server, Client)
//	StreamPiece (0x03)  raw file pieces between peers
//
// A Mux accepts connections, reads that byte under a deadline and hands the
// connection to the listener registered for the kind; unknown kinds are
// closed. So a master needs one port for Raft and RPC, and a peer one port for
// RPC-free piece traffic.
//
// # RPC
//
// The RPC protocol is a small request/response protocol over length-prefixed
// msgpack frames (go-msgpack/v2). We do not use net/rpc because it cannot
// carry a deadline to the server and it flattens errors into strings; here a
// request carries the caller's remaining time, and an error crosses the wire
// as a code plus the leader hint, so the caller can test it with errors.Is and
// errors.As (see NotLeaderError). Every frame is capped (MaxFrameSize), and
// decoding happens from the bounded frame buffer, so a hostile client cannot
// make a node allocate more than one frame.
//
// # Codecs and buffers
//
// The envelope (request, response) and the hot messages of the client
// package (registration, heartbeat, lookup, the tracker relay) have
// hand-written, reflection-free codecs (package transport/wire) that write
// exactly the bytes go-msgpack writes, so masters of mixed versions talk
// during a rolling upgrade with no frame version; input outside their fast
// path goes to the reflective decoder, which decides what is valid.
// Marshal and Unmarshal pick the hand-written codec when a message has one.
// Frames and bodies live in pooled buffers; a connection's frames are
// written by whichever sender finds it idle, so replies that are ready
// together share one system call, with no writer goroutine per connection.
//
// One Client keeps one multiplexed connection per remote address; calls from
// many goroutines share it, and a broken connection fails its in-flight calls
// with ErrConnection (retryable: the outcome of a write is unknown).
package transport
