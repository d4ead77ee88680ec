// Package peer is the FileShare peer as a Go library: it shares a folder
// with the swarm, serves the pieces of its files to other peers, searches
// the index, and downloads files from several holders at once, verifying
// every piece.
//
// # A peer in five calls
//
//	p, err := peer.New(peer.Config{
//		Masters:  []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
//		DataDir:  "/var/lib/fileshare/alice", // identity, hash cache, lock
//		ShareDir: "/home/alice/Public",       // every regular file under it is shared
//		Listen:   "0.0.0.0:7101",             // where other peers fetch pieces
//	})
//	if err != nil { ... }
//	defer p.Leave(ctx)                         // or p.Close(): see below
//	err = p.Rescan(ctx)                        // optional: wait until the index holds the folder
//	files, err := p.Search(ctx, "holiday 2024", 20)
//	res, err := p.Download(ctx, files[0].ID, "/tmp/holiday.mp4", peer.DownloadOptions{
//		Progress: func(pr peer.Progress) { fmt.Println(pr.Done, "of", pr.Size, pr.Rate, "B/s") },
//	})
//
// A peer with no ShareDir only downloads: it never joins the index. Resolve
// turns a name the user typed into one file (or an *AmbiguousError listing
// the candidates).
//
// # Identity and the index
//
// The data dir holds identity.json (mode 0600): a stable peer ID and a
// random 32-byte secret. The masters keep only the secret's hash and demand
// the secret on every write for the peer, so only the peer itself can
// change or remove its registrations. A sharing peer joins through any
// master, heartbeats every third of its lease, and, if the index expired it
// anyway (a long pause), joins again and re-registers everything. A rescan
// every RescanInterval registers new and changed files and unregisters
// removed ones, in batches of up to 10,000 files. Every master call goes
// through client.Client, which fails over between masters: a leader change
// is never an error the caller sees.
//
// Close stops the peer but leaves its registrations in the index until its
// lease expires, so a quick restart (same data dir) is invisible to others;
// Leave removes them at once, then closes.
//
// # Content identity
//
// A file is cut into pieces of PieceSizeFor(size) bytes: 256 KiB up to
// 1 GiB, then doubling so a file has at most 4096 pieces, capped at 16 MiB.
// Each piece's SHA-256 is a leaf of a Merkle tree (MerkleRoot: padding, the
// empty file); the file's ID is a SHA-256 over the size, the piece size and
// that root (FileIDOf), so an ID fixes all three. Hashes are cached in the
// data dir by (path, size, mtime), so a restart rehashes nothing.
//
// # Serving
//
// The piece server shares the peer's one listener (transport.StreamPiece)
// and speaks a small pipelined protocol of fixed 38-byte requests — "the
// piece-hash list of file F", "piece i of file F" — each answered in order
// by a 5-byte header (status, length) and the payload. It serves only
// files that a scan of the share folder found and the index acknowledged,
// opening them through os.Root so that neither ".." nor a symlink leading
// out of the folder can expose another file. At most MaxUploads connections
// are served at once; every read and write has a deadline.
//
// # Downloading
//
// Download looks up the holders (linearizable), fetches the piece-hash list
// from one and checks it against the ID, then keeps several requests in
// flight to every holder; a holder asks for the next missing piece when it
// has room, so the least busy one gets it. Each piece is verified before it
// is written in place into DEST.fileshare-partial; a holder that sends a bad
// piece is dropped for the file (ErrNoHonestHolder when none is left), one
// that fails has its requests re-issued to the others. Verified pieces are
// recorded in DEST.fileshare-resume after an fsync, so a killed download
// resumes where it stopped. On completion the file is fsynced and moved to
// DEST; with DownloadOptions.Seed the peer then shares it too.
package peer
