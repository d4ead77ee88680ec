// Command etcd-driver is the etcd side of FileShare's side-by-side
// benchmarks (scripts/bench-etcd.sh): a closed loop of --clients
// goroutines doing one etcd operation at a time for --duration, through
// the official client, over --conns connections. It is a module of its
// own so that the fileshare binary never links etcd's client.
//
//	etcd-driver --endpoints 127.0.0.1:2379,... --op put --clients 256 --duration 10s
//
// It prints one line: the op, acknowledged operations per second, p50 and
// p99 latency, and errors.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd client URLs or host:port, comma-separated")
	op := flag.String("op", "put", "put, get-serializable or get-linearizable")
	clients := flag.Int("clients", 256, "concurrent closed-loop clients")
	conns := flag.Int("conns", 16, "gRPC connections the clients share")
	duration := flag.Duration("duration", 10*time.Second, "how long to measure")
	valueSize := flag.Int("value-size", 200, "bytes per value")
	keys := flag.Int("keys", 10000, "distinct keys (gets read keys a put phase wrote; run put first)")
	flag.Parse()
	if err := run(strings.Split(*endpoints, ","), *op, *clients, *conns, *duration, *valueSize, *keys); err != nil {
		fmt.Fprintln(os.Stderr, "etcd-driver:", err)
		os.Exit(1)
	}
}

func run(endpoints []string, op string, clients, conns int, d time.Duration, valueSize, keys int) error {
	if clients < 1 || conns < 1 || keys < 1 {
		return fmt.Errorf("--clients, --conns and --keys must be at least 1")
	}
	var cs []*clientv3.Client
	for range conns {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("connect to %v: %w", endpoints, err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	value := strings.Repeat("v", valueSize)
	var do func(ctx context.Context, c *clientv3.Client, key string) error
	switch op {
	case "put":
		do = func(ctx context.Context, c *clientv3.Client, key string) error {
			_, err := c.Put(ctx, key, value)
			return err
		}
	case "get-serializable", "get-linearizable":
		var opts []clientv3.OpOption
		if op == "get-serializable" {
			opts = append(opts, clientv3.WithSerializable())
		}
		// Make sure every key exists, so a get reads a real value.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for i := range keys {
			if _, err := cs[i%len(cs)].Put(ctx, keyOf(i), value); err != nil {
				cancel()
				return fmt.Errorf("populate: %w", err)
			}
		}
		cancel()
		do = func(ctx context.Context, c *clientv3.Client, key string) error {
			r, err := c.Get(ctx, key, opts...)
			if err == nil && len(r.Kvs) == 0 {
				err = fmt.Errorf("get %s found nothing", key)
			}
			return err
		}
	default:
		return fmt.Errorf("--op %q: use put, get-serializable or get-linearizable", op)
	}

	var mu sync.Mutex
	var lats []time.Duration
	errs, firstErr := 0, error(nil)
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start := time.Now()
	for w := range clients {
		wg.Go(func() {
			c := cs[w%len(cs)]
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			local := make([]time.Duration, 0, 4096)
			nerr := 0
			var ferr error
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := do(ctx, c, keyOf(rng.IntN(keys)))
				dt := time.Since(t0)
				cancel()
				if err != nil {
					nerr++
					if ferr == nil {
						ferr = err
					}
					continue
				}
				local = append(local, dt)
			}
			mu.Lock()
			lats = append(lats, local...)
			errs += nerr
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(p*float64(len(lats))))]
	}
	fmt.Printf("etcd %s: %.0f ops/s, p50=%.1fms p99=%.1fms, clients=%d, conns=%d, ops=%d, errors=%d\n",
		op, float64(len(lats))/elapsed.Seconds(), ms(pct(0.50)), ms(pct(0.99)), clients, conns, len(lats), errs)
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "etcd-driver: first error:", firstErr)
	}
	return nil
}

func keyOf(i int) string { return fmt.Sprintf("bench/key-%08d", i) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
