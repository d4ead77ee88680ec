package peer_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"fileshare/master/mastertest"
	"fileshare/peer"
)

// Alice shares a folder, Bob searches the index and downloads her file,
// verified piece by piece. (A one-master cluster keeps the example quick;
// run 3 or 5 masters in production.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmp, err := os.MkdirTemp("", "fileshare-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	// mastertest runs masters in this process on free loopback ports,
	// with TLS (the master package shows how to start one yourself).
	masters, err := mastertest.Start(ctx, 1, mastertest.Options{Dir: tmp, TLS: true})
	if err != nil {
		log.Fatal(err)
	}
	defer masters.Close()
	addr := masters.Addr(0)

	share := filepath.Join(tmp, "alice-share")
	os.MkdirAll(share, 0o755)
	os.WriteFile(filepath.Join(share, "hello.txt"), []byte("hello, world\n"), 0o644)
	// A peer is a key in its data dir; CA is how it tells real masters.
	alice, err := peer.New(peer.Config{Masters: []string{addr}, CA: masters.CA(), DataDir: filepath.Join(tmp, "alice"),
		ShareDir: share, Listen: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	// Leave removes her registrations; Close would keep them until her
	// lease expires.
	defer alice.Leave(ctx)
	// Rescan waits until the index holds her files.
	if err := alice.Rescan(ctx); err != nil {
		log.Fatal(err)
	}

	// Bob has no share folder: a download-only peer, which listens nowhere.
	bob, err := peer.New(peer.Config{Masters: []string{addr}, CA: masters.CA(), DataDir: filepath.Join(tmp, "bob")})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	files, err := bob.Search(ctx, "hello", 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range files {
		fmt.Printf("found %s: %d bytes, %d holder(s)\n", f.Name, f.Size, f.Holders)
	}
	res, err := bob.Download(ctx, files[0].ID, filepath.Join(tmp, "downloads", "hello.txt"), peer.DownloadOptions{})
	if err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(res.Path)
	fmt.Printf("downloaded %d piece(s), %d from alice: %s", res.Pieces, res.FromHolders[alice.ID()], b)
	// Output:
	// found hello.txt: 13 bytes, 1 holder(s)
	// downloaded 1 piece(s), 1 from alice: hello, world
}
