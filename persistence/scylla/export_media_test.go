package scylla

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"
)

// MediaIndex lists every media_by_day row as "digest@2006-01-02T15:04:05Z"
// (sorted) and the days in media_days as dates, so tests can see what
// ExpiredBlobs cleaned up. It scans the whole table: tests only.
func (s *Store) MediaIndex(ctx context.Context) (rows, days []string, err error) {
	it := s.query(ctx, "SELECT day, last_referenced, digest FROM media_by_day").Iter()
	var day int
	var last time.Time
	var digest string
	for it.Scan(&day, &last, &digest) {
		if mediaDay(last) != day {
			return nil, nil, fmt.Errorf("row %s@%s is in day %d", digest, last, day)
		}
		rows = append(rows, digest+"@"+last.UTC().Format(time.RFC3339))
	}
	if err := it.Close(); err != nil {
		return nil, nil, err
	}
	slices.Sort(rows)
	err = s.pages(ctx, s.query(ctx, "SELECT day FROM media_days WHERE bucket = 0"), 0, func(it *gocql.Iter) bool {
		if !it.Scan(&day) {
			return false
		}
		days = append(days, time.UnixMilli(int64(day)*24*3600*1000).UTC().Format(time.DateOnly))
		return true
	})
	return rows, days, err
}
