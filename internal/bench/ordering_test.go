package bench

import (
	"context"
	"path/filepath"
	"testing"
)

// TestOrderingPhase runs the ordering phase, which runs only when named,
// quickly on SQLite and the in-process broker: every figure is there, each
// ordered one against its unordered twin, and no table of the run is left,
// the key tables included.
func TestOrderingPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the ordering phase for a few seconds")
	}
	path := filepath.Join(t.TempDir(), "bench.db")
	rep, stdout := quickPhase(t, "ordering", path)
	for name, ref := range map[string]string{
		"ordering.consumer.ordered":   "ordering.consumer.unordered",
		"ordering.publish.c1.keyed":   "ordering.publish.c1.unkeyed",
		"ordering.publish.c4.keyed":   "ordering.publish.c4.unkeyed",
		"ordering.publish.c16.onekey": "ordering.publish.c16.keyed",
		"ordering.consumer.unordered": "",
		"ordering.publish.c16.keyed":  "",
		"ordering.publish.c4.unkeyed": "",
		"ordering.publish.c1.unkeyed": "",
	} {
		checkFigure(t, rep, stdout, name, ref)
	}
	db, err := openDatabase(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.close()
	var left []string
	rows, err := db.db.QueryContext(context.Background(), "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'eventbench_%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		left = append(left, n)
	}
	if len(left) > 0 {
		t.Errorf("tables left after the run: %v", left)
	}
}
