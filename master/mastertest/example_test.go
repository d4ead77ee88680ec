package mastertest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"fileshare/client"
	"fileshare/master/mastertest"
)

// Three masters elect a leader; a peer's registration survives the
// leader's crash, and the crashed master catches up after a restart.
// (In a test, mastertest.New(t, 3, mastertest.Options{}) does the same
// with t's cleanup and timeouts.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := mastertest.Start(ctx, 3, mastertest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		log.Fatal(err)
	}

	cl, err := client.New(client.Config{Masters: c.Addrs()})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	alice, err := client.NewIdentity() // a peer is its key
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cl.Join(ctx, alice, "127.0.0.1:9000"); err != nil {
		log.Fatal(err)
	}
	f := client.FileEntry{ID: fmt.Sprintf("%064x", 1), Name: "hello.txt", Size: 13, PieceSize: 1 << 18}
	if _, err := cl.Register(ctx, alice, []client.FileEntry{f}); err != nil {
		log.Fatal(err)
	}

	if err := c.Kill(leader); err != nil {
		log.Fatal(err)
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		log.Fatal(err)
	}
	r, err := cl.Lookup(ctx, f.ID, client.ReadLinearizable)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("found after the leader's crash:", r.Found)

	if err := c.Restart(ctx, leader); err != nil {
		log.Fatal(err)
	}
	if _, err := c.WaitConverged(ctx); err != nil {
		log.Fatal(err)
	}
	st, err := c.Status(ctx, leader)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("files on the restarted master:", st.Files)
	// Output:
	// found after the leader's crash: true
	// files on the restarted master: 1
}
