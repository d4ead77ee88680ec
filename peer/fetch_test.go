package peer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// fakeHolder answers piece requests on conn until it fails: with the
// piece, altered by lie if set, or not at all if silent. Like a holder
// behind TCP's buffers, it takes requests while it is sending answers
// (net.Pipe alone buffers nothing).
type fakeHolder struct {
	data   []byte
	silent bool
	lie    func(i int, b []byte)
}

func (h fakeHolder) serve(conn net.Conn) {
	reqs := make(chan pieceRequest, 64)
	go func() {
		defer close(reqs)
		var req [requestLen]byte
		for {
			if _, err := io.ReadFull(conn, req[:]); err != nil {
				return
			}
			r, err := decodeRequest(req[:])
			if err != nil {
				return
			}
			if !h.silent {
				reqs <- r
			}
		}
	}()
	defer func() {
		conn.Close()
		for range reqs { // until the reader has ended
		}
	}()
	for r := range reqs {
		off := int(r.Index) * testPieceSize
		b := bytes.Clone(h.data[off:min(off+testPieceSize, len(h.data))])
		if h.lie != nil {
			h.lie(int(r.Index), b)
		}
		hdr := respHeader{Status: statusOK, Len: uint32(len(b))}.encode()
		if _, err := conn.Write(append(hdr[:], b...)); err != nil {
			return
		}
	}
}

// testWorkerDownload returns a download of data (pieces of testPieceSize)
// with nothing verified, whose every dial reaches h over a net.Pipe.
func testWorkerDownload(t *testing.T, data []byte, h fakeHolder) *download {
	t.Helper()
	var hashes [][32]byte
	for off := 0; off < len(data); off += testPieceSize {
		hashes = append(hashes, sha256.Sum256(data[off:min(off+testPieceSize, len(data))]))
	}
	id := FileIDOf(int64(len(data)), testPieceSize, hashes)
	var root [32]byte
	raw, _ := hex.DecodeString(id)
	copy(root[:], raw)
	logger := slog.New(slog.DiscardHandler)
	size := int64(len(data))
	pf, st, err := openPartial(filepath.Join(t.TempDir(), "f"), root, size, testPieceSize, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pf.close)
	return &download{
		p:  &Peer{cfg: Config{IOTimeout: 20 * time.Second}, logger: logger},
		id: id, root: root, size: size, pieceSize: testPieceSize, n: len(hashes),
		window: 4, hashes: hashes, file: pf, pieces: newPieceTable(st),
		dialStream: func(string, string, time.Duration) (net.Conn, error) {
			c, s := net.Pipe()
			go h.serve(s)
			return c, nil
		},
	}
}

// A holder that takes requests and never answers ends its worker at the
// IOTimeout deadline, not earlier, and every piece it was asked for goes
// back to the table for the others.
func TestWorkerReissuesASilentHoldersPiecesAfterIOTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := testWorkerDownload(t, randomBytes(1, 3*testPieceSize+100), fakeHolder{silent: true})
		start := time.Now()
		got, err := d.worker(t.Context(), "h", "holder")
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("worker of a silent holder: %v, want a deadline error", err)
		}
		if waited := time.Since(start); waited != d.p.cfg.IOTimeout {
			t.Fatalf("worker gave up after %v, want the IOTimeout %v", waited, d.p.cfg.IOTimeout)
		}
		if got != 0 {
			t.Fatalf("worker verified %d pieces from a silent holder", got)
		}
		for i := range d.n {
			take(t, d.pieces, nil, maxDups, flight{i, false})
		}
	})
}

// A holder that answers every request gets every piece verified and
// written once, and its worker ends when the file is complete.
func TestWorkerStoresEveryPieceOfAnHonestHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := randomBytes(2, 5*testPieceSize+100)
		d := testWorkerDownload(t, data, fakeHolder{data: data})
		got, err := d.worker(t.Context(), "h", "holder")
		if err != nil || got != d.n {
			t.Fatalf("worker: %d pieces, %v; want %d, nil", got, err, d.n)
		}
		if st := d.pieces.stats(); st.Done != d.n || st.Fetched != d.n || st.Dups != 0 {
			t.Fatalf("table after an honest holder: %+v, want %d fetched once each", st, d.n)
		}
		b, err := os.ReadFile(d.file.path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, data) {
			t.Fatal("the partial file differs from the holder's data")
		}
	})
}

// A holder that sends a bad piece ends its worker with errBadData; the
// pieces before it are stored, and neither the bad piece nor anything the
// holder sent after it is: they go back to the table.
func TestWorkerStoresNothingAfterABadPiece(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := randomBytes(3, 4*testPieceSize)
		liar := fakeHolder{data: data, lie: func(i int, b []byte) {
			if i == 1 {
				b[0] ^= 1
			}
		}}
		d := testWorkerDownload(t, data, liar)
		got, err := d.worker(t.Context(), "liar", "holder")
		if !errors.Is(err, errBadData) {
			t.Fatalf("worker of a liar: %v, want errBadData", err)
		}
		if got != 1 {
			t.Fatalf("worker verified %d pieces, want 1 (the one before the bad piece)", got)
		}
		if from := d.pieces.fromHolders(); from["liar"] != 1 || d.pieces.stats().Done != 1 {
			t.Fatalf("table after a liar: %+v from %v, want only piece 0 verified", d.pieces.stats(), from)
		}
		for i := 1; i < d.n; i++ {
			take(t, d.pieces, nil, maxDups, flight{i, false})
		}
	})
}
