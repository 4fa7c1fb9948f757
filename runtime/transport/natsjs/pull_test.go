package natsjs

import "testing"

// TestPullSize checks how many messages a subscription pulls ahead for
// the server's max_payload: pullBatch up to 1 MiB (the server's default),
// fewer above, so that what it buffers stays within pullBytes, and one
// once a single message may be larger.
func TestPullSize(t *testing.T) {
	for _, c := range []struct {
		maxPayload int64
		want       int
	}{
		{0, pullBatch},
		{64 << 10, pullBatch},
		{1 << 20, pullBatch},
		{2 << 20, 5},
		{8 << 20, 1},
		{64 << 20, 1},
	} {
		if got := pullSize(c.maxPayload); got != c.want {
			t.Errorf("pullSize(%d) = %d, want %d", c.maxPayload, got, c.want)
		}
	}
}
