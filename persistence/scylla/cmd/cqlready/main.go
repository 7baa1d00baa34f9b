// Command cqlready waits until a CQL node answers a real query, so the test
// setup (scripts/cassandra.sh) knows the node is usable and not merely
// listening: the native transport opens a moment before the node can serve
// schema changes and reads.
//
//	cqlready -hosts 127.0.0.1:9042 -timeout 90s
//
// It exits 0 once `SELECT release_version FROM system.local` succeeds, and 1
// with the last error when the timeout passes first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

func main() {
	hosts := flag.String("hosts", "127.0.0.1:9042", "comma-separated host:port list")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	quiet := flag.Bool("quiet", false, "print nothing on success")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	version, err := wait(ctx, strings.Split(*hosts, ","))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cqlready: %s not ready after %v: %v\n", *hosts, *timeout, err)
		os.Exit(1)
	}
	if !*quiet {
		fmt.Printf("cqlready: %s answers (release_version %s)\n", *hosts, version)
	}
}

// wait retries connect-and-query until it succeeds or ctx ends.
func wait(ctx context.Context, hosts []string) (string, error) {
	last := errors.New("no attempt made")
	for {
		v, err := probe(ctx, hosts)
		if err == nil {
			return v, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", last
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, hosts []string) (string, error) {
	cl := gocql.NewCluster(hosts...)
	cl.Consistency = gocql.One
	cl.ConnectTimeout = 2 * time.Second
	cl.Timeout = 5 * time.Second
	cl.NumConns = 1
	cl.DisableInitialHostLookup = true
	// The probe is one of many attempts, so one quick reconnect at most.
	// (MaxRetries 0 makes this driver version hand its pool a nil
	// connection and panic.)
	cl.ReconnectionPolicy = &gocql.ConstantReconnectionPolicy{MaxRetries: 1, Interval: 100 * time.Millisecond}
	cl.Logger = silent{}
	s, err := cl.CreateSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var v string
	if err := s.Query(`SELECT release_version FROM system.local`).WithContext(ctx).Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

// silent drops the driver's connection chatter while the node boots.
type silent struct{}

func (silent) Print(...any)          {}
func (silent) Printf(string, ...any) {}
func (silent) Println(...any)        {}
