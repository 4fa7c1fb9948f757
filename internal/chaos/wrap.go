package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/transport"
)

// HeaderReject marks messages that a Publisher refuses while Reject is on.
const HeaderReject = "chaos-reject"

// Publisher wraps the relay's Watermill publisher: it moves topics into
// the scenario's namespace, runs failpoint hooks around the broker's
// acknowledgement, and can simulate a broker outage or refuse marked
// messages. It counts every attempt.
type Publisher struct {
	inner message.Publisher
	ns    string
	// BeforePublish runs before a publish reaches the broker.
	BeforePublish func()
	// AfterPublish runs once the broker acknowledged a publish, before
	// the relay can mark the rows published.
	AfterPublish func()
	acks         *AckWaiter
	// Progress, if set, records each publish the broker confirmed.
	Progress *ProgressLog

	down     atomic.Bool
	reject   atomic.Bool
	attempts atomic.Int64
	mu       sync.Mutex
	perID    map[string]int // attempts by message id while down
}

// NewPublisher wraps inner. With acks, Publish returns only once every
// group acknowledged the message (see AckWaiter).
func NewPublisher(inner message.Publisher, namespace string, acks *AckWaiter) *Publisher {
	return &Publisher{inner: inner, ns: namespace, acks: acks, perID: map[string]int{}}
}

// SetDown starts or ends a simulated broker outage: Publish fails at once.
func (p *Publisher) SetDown(down bool) { p.down.Store(down) }

// SetReject makes Publish refuse messages carrying HeaderReject, or stop.
func (p *Publisher) SetReject(on bool) { p.reject.Store(on) }

// Attempts returns how many Publish calls were made.
func (p *Publisher) Attempts() int64 { return p.attempts.Load() }

// OutageAttempts returns the attempts made while down, by message id.
func (p *Publisher) OutageAttempts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.perID))
	for k, v := range p.perID {
		out[k] = v
	}
	return out
}

// ErrBrokerDown is returned by Publish during a simulated outage.
var ErrBrokerDown = errors.New("chaos: broker down (simulated)")

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.attempts.Add(1)
	if p.down.Load() {
		p.mu.Lock()
		for _, m := range msgs {
			p.perID[m.UUID]++
		}
		p.mu.Unlock()
		return ErrBrokerDown
	}
	if p.reject.Load() {
		for _, m := range msgs {
			if m.Metadata.Get(HeaderReject) != "" {
				return fmt.Errorf("chaos: message %s refused", m.UUID)
			}
		}
	}
	start := time.Now()
	if p.BeforePublish != nil {
		p.BeforePublish()
	}
	var waits []*ackWait
	if p.acks != nil {
		for _, m := range msgs {
			waits = append(waits, p.acks.expect(m.UUID))
		}
	}
	if err := p.inner.Publish(p.ns+topic, msgs...); err != nil {
		p.acks.forget(waits)
		return err
	}
	if err := p.acks.wait(waits); err != nil {
		return err
	}
	p.Progress.Record(ProgressPublish, start)
	if p.AfterPublish != nil {
		p.AfterPublish()
	}
	return nil
}

// Close implements message.Publisher.
func (p *Publisher) Close() error { return p.inner.Close() }

// AckWaiter makes an in-process broker confirm a publish only once every
// consumer group has acknowledged the message, that is, committed it to
// its inbox. GoChannel keeps nothing across a crash: without this, a relay
// killed together with its consumer loses the messages the broker held,
// which says nothing about eventgen. With it, a message is marked
// published only after it is durable in every group's inbox, as a
// persistent broker's confirm would make it durable in the broker.
type AckWaiter struct {
	groups  int
	timeout time.Duration

	mu      sync.Mutex
	waiting map[string]*ackWait
}

type ackWait struct {
	id     string
	groups map[string]bool
	done   chan struct{}
}

// NewAckWaiter returns a waiter for the given number of groups; a publish
// not acknowledged by all of them within timeout fails.
func NewAckWaiter(groups int, timeout time.Duration) *AckWaiter {
	return &AckWaiter{groups: groups, timeout: timeout, waiting: map[string]*ackWait{}}
}

func (a *AckWaiter) expect(id string) *ackWait {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.waiting[id]
	if w == nil {
		w = &ackWait{id: id, groups: map[string]bool{}, done: make(chan struct{})}
		a.waiting[id] = w
	}
	return w
}

func (a *AckWaiter) forget(ws []*ackWait) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range ws {
		if a.waiting[w.id] == w {
			delete(a.waiting, w.id)
		}
	}
}

func (a *AckWaiter) wait(ws []*ackWait) error {
	if a == nil {
		return nil
	}
	defer a.forget(ws)
	timer := time.NewTimer(a.timeout)
	defer timer.Stop()
	for _, w := range ws {
		select {
		case <-w.done:
		case <-timer.C:
			return fmt.Errorf("chaos: message %s not acknowledged by every group within %s", w.id, a.timeout)
		}
	}
	return nil
}

// acked records that group acknowledged message id.
func (a *AckWaiter) acked(group, id string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.waiting[id]
	if w == nil || w.groups[group] {
		return
	}
	w.groups[group] = true
	if len(w.groups) == a.groups {
		close(w.done)
	}
}

// Subscriber wraps one consumer group's Watermill subscriber: it moves
// topics into the scenario's namespace, logs every raw delivery, and runs
// a failpoint hook after the consumer acknowledged a message (after its
// inbox commit) and before the broker is told.
type Subscriber struct {
	inner message.Subscriber
	ns    string
	group string
	raw   *RawLog
	acks  *AckWaiter
	// BeforeAck runs after the consumer acked message id, before the ack
	// reaches the broker.
	BeforeAck func(id string)
	// Progress, if set, records each message the consumer acked.
	Progress *ProgressLog

	wg sync.WaitGroup
}

// NewSubscriber wraps inner for group. raw and acks may be nil.
func NewSubscriber(inner message.Subscriber, namespace, group string, raw *RawLog, acks *AckWaiter) *Subscriber {
	return &Subscriber{inner: inner, ns: namespace, group: group, raw: raw, acks: acks}
}

// MessageID is the id a consumer sees: ce_id, or the Watermill UUID.
func MessageID(m *message.Message) string {
	if id := m.Metadata.Get("ce_id"); id != "" {
		return id
	}
	return m.UUID
}

// Subscribe implements message.Subscriber.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.inner.Subscribe(ctx, s.ns+topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for m := range in {
			delivered := time.Now()
			id := MessageID(m)
			s.raw.Record(s.group, id)
			m2 := m.Copy()
			m2.SetContext(m.Context())
			select {
			case out <- m2:
			case <-ctx.Done():
				m.Nack()
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				select {
				case <-m2.Acked():
					s.Progress.Record(ProgressHandle, delivered)
					if s.BeforeAck != nil {
						s.BeforeAck(id)
					}
					m.Ack()
					s.acks.acked(s.group, m.UUID)
				case <-m2.Nacked():
					m.Nack()
				case <-ctx.Done():
					m.Nack()
				}
			}()
		}
	}()
	return out, nil
}

// CompetingSubscriptions reports what the inner subscriber reports, so that
// a consumer handles one topic concurrently where the broker allows it.
func (s *Subscriber) CompetingSubscriptions() bool {
	cs, ok := s.inner.(interface{ CompetingSubscriptions() bool })
	return ok && cs.CompetingSubscriptions()
}

// SubscribeInitialize creates the group on the broker for topic.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if si, ok := s.inner.(message.SubscribeInitializer); ok {
		return si.SubscribeInitialize(s.ns + topic)
	}
	return nil
}

// Close closes the inner subscriber and waits for the forwarding
// goroutines.
func (s *Subscriber) Close() error {
	err := s.inner.Close()
	s.wg.Wait()
	return err
}

// lineFile appends lines to a file. Each line is one write(2), so a
// SIGKILL loses no line that was written. A nil lineFile writes nothing.
type lineFile struct {
	f *os.File
}

func openLineFile(path string) (*lineFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &lineFile{f: f}, nil
}

func (l *lineFile) write(line string) {
	if l == nil {
		return
	}
	_, _ = l.f.Write([]byte(line + "\n"))
}

// Close closes the file.
func (l *lineFile) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// RawLog appends one line per raw delivery to a file of its own.
type RawLog struct {
	*lineFile
}

// OpenRawLog creates a new log file in dir.
func OpenRawLog(dir string) (*RawLog, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	f, err := openLineFile(filepath.Join(dir, fmt.Sprintf("raw-%d-%s.log", os.Getpid(), hex.EncodeToString(b[:]))))
	if err != nil {
		return nil, fmt.Errorf("chaos: open raw log: %w", err)
	}
	return &RawLog{f}, nil
}

// Record logs a delivery of message id to group.
func (l *RawLog) Record(group, id string) {
	if l == nil {
		return
	}
	l.write(group + " " + id)
}

// Close closes the file.
func (l *RawLog) Close() error {
	if l == nil {
		return nil
	}
	return l.lineFile.Close()
}

// Progress kinds in a ProgressLog.
const (
	ProgressPublish = "publish" // a relay's publish, from its call to the broker's confirm
	ProgressHandle  = "handle"  // a consumer's message, from its delivery to the consumer's ack
)

// ProgressLog records, with timestamps, each publish a process's relays
// completed and each message its consumers handled, so that a test can
// tell when a process worked again after a pause.
type ProgressLog struct {
	*lineFile
}

// OpenProgressLog opens (or creates) the progress log at path.
func OpenProgressLog(path string) (*ProgressLog, error) {
	f, err := openLineFile(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: open progress log: %w", err)
	}
	return &ProgressLog{f}, nil
}

// Record logs a piece of work of kind that began at start and ends now.
func (l *ProgressLog) Record(kind string, start time.Time) {
	if l == nil {
		return
	}
	l.write(fmt.Sprintf("%d %d %s", start.UnixMicro(), time.Now().UnixMicro(), kind))
}

// Close closes the file.
func (l *ProgressLog) Close() error {
	if l == nil {
		return nil
	}
	return l.lineFile.Close()
}

// Progress is one line of a ProgressLog.
type Progress struct {
	Kind       string
	Start, End time.Time
}

// ReadProgress returns the lines of the progress log at path, in the order
// they were written; a missing file has none.
func ReadProgress(path string) ([]Progress, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chaos: read progress log: %w", err)
	}
	var out []Progress
	for _, line := range strings.Split(string(b), "\n") {
		var start, end int64
		var kind string
		if _, err := fmt.Sscanf(line, "%d %d %s", &start, &end, &kind); err != nil {
			continue // an empty last line, or one cut by a crash mid-write
		}
		out = append(out, Progress{Kind: kind, Start: time.UnixMicro(start), End: time.UnixMicro(end)})
	}
	return out, nil
}

// ReadRawLogs returns the deliveries logged in dir: counts by group and
// message id.
func ReadRawLogs(dir string) (map[string]map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "raw-*.log"))
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]int{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			group, id, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue // a line cut by a crash mid-write
			}
			if out[group] == nil {
				out[group] = map[string]int{}
			}
			out[group][id]++
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// discard is a publisher and subscriber that does nothing, for Migrate.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return nil, errors.New("chaos: discard subscriber")
}
func (discard) Close() error { return nil }

// Namespace returns a topic prefix unique to a scenario, ending in a dot.
func Namespace() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "chaos" + hex.EncodeToString(b[:]) + "."
}

// OpenTransport opens the broker at url ("" for the in-process one).
func OpenTransport(ctx context.Context, url string, opts transport.Options) (*transport.Transport, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return transport.Open(ctx, url, opts)
}
