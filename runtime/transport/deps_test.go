package transport_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBrokerPackagesCompileOneClient checks the promise of the package
// documentation: a service that imports one broker's package compiles that
// broker's client and no other.
func TestBrokerPackagesCompileOneClient(t *testing.T) {
	clients := map[string]string{
		"amqp":        "github.com/rabbitmq/amqp091-go",
		"natsjs":      "github.com/nats-io/nats.go",
		"redisstream": "github.com/redis/go-redis/v9",
		"sqlbroker":   "github.com/ThreeDotsLabs/watermill-sql/v4",
	}
	const base = "github.com/eventgen/eventgen/runtime/transport/"
	for _, pkg := range []string{"mem", "amqp", "natsjs", "redisstream", "sqlbroker"} {
		out, err := exec.Command("go", "list", "-deps", base+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := string(out)
		for owner, client := range clients {
			has := strings.Contains(deps, client)
			if want := owner == pkg; has != want {
				t.Errorf("%s compiles %s: %v, want %v", pkg, client, has, want)
			}
		}
		for _, other := range []string{"runtime/eventgen", "generator", "jennifer", "yaml"} {
			if strings.Contains(deps, other) {
				t.Errorf("%s depends on %s", pkg, other)
			}
		}
	}
}
