package testenv

import (
	"context"
	"testing"
)

// TestDatabases opens every database the environment names, SQLite with
// the settings a relay and producers sharing the file need.
func TestDatabases(t *testing.T) {
	for _, d := range Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			if got := db.Dialect().Name().String(); got != d.Name && !(d.Name == "postgres" && got == "pg") {
				t.Errorf("dialect %s", got)
			}
			if d.Name != "sqlite" {
				return
			}
			var mode string
			if err := db.QueryRowContext(context.Background(), "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
		})
	}
}
