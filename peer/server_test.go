package peer

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// servePipe runs p.serveConn on the server end of a loopback TCP
// connection (a *net.TCPConn, which takes the sendfile path, unlike the
// Mux's wrapped connections) and returns the client end.
func servePipe(t *testing.T, p *Peer) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, ok := c.(io.ReaderFrom); !ok {
			t.Error("a *net.TCPConn is not an io.ReaderFrom; the sendfile path is not exercised")
		}
		p.serveConn(c, nil)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); <-done })
	return client
}

// Pipelined requests are answered in order, through the sendfile path,
// byte for byte; a request for a file the peer does not serve gets "not
// found" and the connection stays usable.
func TestServeConnPipelinesPiecesOverSendfile(t *testing.T) {
	share := t.TempDir()
	data := randomBytes(9, 3*DefaultPieceSize+100)
	os.WriteFile(filepath.Join(share, "f"), data, 0o644)
	s := newTestStore(t, share, t.TempDir())
	files, err := s.scan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{cfg: Config{IOTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}, logger: slog.New(slog.DiscardHandler), store: s}
	p.served.Store(&files)
	var sf *sharedFile
	for _, f := range files {
		sf = f
	}
	raw, err := hex.DecodeString(sf.ID)
	if err != nil {
		t.Fatal(err)
	}
	root := [32]byte(raw)

	conn := servePipe(t, p)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var reqs []byte
	order := []int{3, 0, 2, 1}
	for _, i := range order {
		reqs = pieceRequest{Op: opPiece, File: root, Index: uint32(i)}.appendTo(reqs)
	}
	reqs = pieceRequest{Op: opPiece, File: [32]byte{1}, Index: 0}.appendTo(reqs) // not shared
	reqs = pieceRequest{Op: opHashes, File: root}.appendTo(reqs)
	if _, err := conn.Write(reqs); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for _, i := range order {
		h, err := readHeader(br)
		if err != nil || h.Status != statusOK {
			t.Fatalf("piece %d: header %+v, %v", i, h, err)
		}
		got := make([]byte, h.Len)
		io.ReadFull(br, got)
		off := i * DefaultPieceSize
		if want := data[off:min(off+DefaultPieceSize, len(data))]; !bytes.Equal(got, want) {
			t.Fatalf("piece %d: %d bytes that differ from the file's", i, len(got))
		}
	}
	if h, err := readHeader(br); err != nil || h.Status != statusNotFound {
		t.Fatalf("unknown file: header %+v, %v; want not found", h, err)
	} else {
		io.CopyN(io.Discard, br, int64(h.Len))
	}
	h, err := readHeader(br)
	if err != nil || h.Status != statusOK || int(h.Len) != len(sf.Hashes) {
		t.Fatalf("hash list: header %+v, %v", h, err)
	}
	hs := make([]byte, h.Len)
	io.ReadFull(br, hs)
	if FileIDOf(sf.Size, sf.PieceSize, leaves(hs)) != sf.ID {
		t.Fatal("hash list does not match the file ID")
	}
	// Out of range: a bad request, and the server hangs up.
	conn.Write(pieceRequest{Op: opPiece, File: root, Index: 4}.appendTo(nil))
	if h, err := readHeader(br); err != nil || h.Status != statusBadRequest {
		t.Fatalf("piece out of range: header %+v, %v; want bad request", h, err)
	} else {
		io.CopyN(io.Discard, br, int64(h.Len))
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after a bad request: %v", err)
	}
}
