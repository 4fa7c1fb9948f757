package sqlstore

import "testing"

func TestDriverPlaceholders(t *testing.T) {
	pg, _ := DialectByName("postgres")
	my, _ := DialectByName("mysql")
	for _, c := range []struct {
		d           Dialect
		query, want string
	}{
		{pg, "INSERT INTO t (a, b) VALUES (?, ?), (?, now() + ?)", "INSERT INTO t (a, b) VALUES ($1, $2), ($3, now() + $4)"},
		{pg, "SELECT 1", "SELECT 1"},
		{pg, "?", "$1"},
		{pg, "??????????", "$1$2$3$4$5$6$7$8$9$10"},
		{my, "INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (?)"},
	} {
		if got := driverPlaceholders(c.d, c.query); got != c.want {
			t.Errorf("%s: driverPlaceholders(%q) = %q, want %q", c.d.Name, c.query, got, c.want)
		}
	}
}
