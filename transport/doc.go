// Package transport is FileShare's wire: one TCP listener per node, shared by
// every kind of traffic the node speaks.
//
// # Multiplexing: the first byte
//
// Every connection opens with one byte that names its stream kind:
//
//	StreamRaft  (0x01)  hashicorp/raft's NetworkTransport (master adapts a Listener)
//	StreamRPC   (0x02)  the msgpack RPC protocol of this package (Server, Client)
//	StreamPiece (0x03)  raw file pieces between peers
//
// A Mux accepts connections, reads that byte under a deadline
// (MuxConfig.HandshakeTimeout) and hands the connection to the listener
// registered for the kind; unknown kinds are closed. So a master needs one
// port for Raft and RPC, and a peer one port for RPC and pieces. With TLS
// the byte is the first one inside TLS. A client that speaks something
// else gets an answer it can read before the Mux hangs up: a plaintext
// Mux answers an HTTP request with a 400 naming the HTTP port, a TLS Mux
// answers plaintext with a TLS alert; a dialler recognises those answers
// (and a TLS port when it speaks plaintext) as ErrNotFileShare or
// ErrTLSMismatch, which retrying cannot fix.
//
// # TLS, certificates and roles
//
// With MuxConfig.TLS every connection, accepted and dialled, is TLS 1.3
// (LoadTLS reads the credentials and reloads them when the files change).
// The certificate a connection presented decides its Role (CallerOf,
// Classify):
//
//	RoleAnonymous  no certificate, or one nobody vouches for: reads only
//	RolePeer       a self-signed Ed25519 certificate: acts as the one peer its key names
//	RoleAdmin      signed by the cluster CA, URI SAN fileshare://admin/NAME
//	RoleMaster     signed by the cluster CA, URI SAN fileshare://master/ID
//
// A peer needs no CA: its certificate is its key (PeerTLS, SelfSigned), and
// a peer dialling another checks that the key is the one the index lists
// for that address (PeerClientConfig, ErrWrongPeer). Masters and admins get
// certificates from the cluster CA (NewCA, CA.Issue; InitFiles writes a
// dev cluster's set), and a dialled master must prove it is one
// (MasterClientConfig, ErrNotAMaster). Handlers ask who called with
// CallerFrom and Require(ctx, role). MuxConfig.Authorize may refuse a role
// a stream kind (only masters speak Raft), and a Gate adds what the
// certificate alone cannot say: the cluster's deny list (ErrRevoked) and
// who is a member; it is asked at the handshake and again for every open
// connection whenever its answer or the CA changes.
//
// # Quotas
//
// Open connections are capped (MuxConfig.MaxConns, MaxConnsPerIP), charged
// to a Source: the remote IP, and for IPv6 also its /64 and /48, so one
// host cannot take a node's capacity by spreading over its network's
// addresses. Members have capacity of their own (MaxMemberConns), so
// strangers holding every connection never keep the cluster from
// talking to itself. A firewall (Mux.Block) cuts links for tests.
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
