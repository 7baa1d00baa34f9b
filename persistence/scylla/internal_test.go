package scylla

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

func TestBatchesStayPerPartitionAndUnderTheLimits(t *testing.T) {
	row := func(p string, bytes int) write { return write{partition: p, bytes: bytes} }
	cases := []struct {
		name string
		rows []write
		want []int // rows per batch, in order
	}{
		{"one partition", []write{row("a", 10), row("a", 10), row("a", 10)}, []int{3}},
		{"two partitions keep their first-seen order", []write{row("a", 10), row("b", 10), row("a", 10)}, []int{2, 1}},
		{"cut by size", []write{row("a", 20<<10), row("a", 20<<10), row("a", 1)}, []int{1, 2}},
		{"an oversized row goes alone", []write{row("a", 1), row("a", 80<<10), row("a", 1)}, []int{1, 1, 1}},
		{"cut by rows", make150("a"), []int{maxBatchRows, 50}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for _, b := range batches(tc.rows) {
				size := 0
				for _, r := range b {
					if r.partition != b[0].partition {
						t.Fatalf("batch mixes partitions %q and %q", b[0].partition, r.partition)
					}
					size += r.bytes
				}
				if len(b) > 1 && size > maxBatchBytes {
					t.Fatalf("batch of %d rows is %d bytes", len(b), size)
				}
				got = append(got, len(b))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("batch sizes %v, want %v", got, tc.want)
			}
		})
	}
}

func make150(p string) []write {
	rows := make([]write, 150)
	for i := range rows {
		rows[i] = write{partition: p, bytes: 10}
	}
	return rows
}

// gocqlx/migrate splits a file at every ';', comments included.
func TestMigrationCommentsHaveNoSemicolons(t *testing.T) {
	err := fs.WalkDir(Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Migrations(), path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if c := strings.Index(line, "--"); c >= 0 && strings.Contains(line[c:], ";") {
				t.Errorf("%s:%d: a ';' in a comment ends the statement early", path, i+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"not found", gocql.ErrNotFound, persistence.ErrNotFound},
		{"no connections", gocql.ErrNoConnections, persistence.ErrUnavailable},
		{"timeout", gocql.ErrTimeoutNoResponse, persistence.ErrUnavailable},
		{"write timeout", &gocql.RequestErrWriteTimeout{}, nil},
		{"deadline", context.DeadlineExceeded, persistence.ErrUnavailable},
		{"closed", persistence.ErrClosed, persistence.ErrClosed},
		{"a bug", errors.New("syntax"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.err)
			if tc.want != nil && !errors.Is(got, tc.want) {
				t.Fatalf("classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if tc.want == nil && errors.Is(got, persistence.ErrUnavailable) != (tc.name == "write timeout") {
				t.Fatalf("classify(%v) = %v", tc.err, got)
			}
		})
	}
}
