package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// Per-key ordering: a group's blocked keys, the skip of a key's next
// event, and the events held behind one.

// maxBlocked is how many blocked keys the blocked view lists.
const maxBlocked = 200

// maxBehind is how many held events a row's page lists behind it.
const maxBehind = 20

// blockedView is one blocked key as the blocked view shows it.
type blockedView struct {
	Source, Topic, Key string
	Applied            int64
	// Next is the sequence of the event the key waits for; NextLink its
	// row's page, empty when the group never received it.
	Next                                int64
	NextStatus, NextID, NextLink, Error string
	Waiting                             int
	Since                               string
	// Stuck offers the skip: the key waits for more than its turn.
	Stuck bool
}

type blockedPage struct {
	T       *target
	Keys    []blockedView
	Limited bool
	Skip    bool // actions shown
	Flash   string
}

// blockedView of b; links maps message ids to their rows' pages.
func newBlockedView(t *target, b eventgen.BlockedKey, ids map[string]int64) blockedView {
	v := blockedView{
		Source: b.Source, Topic: b.Topic, Key: b.Key, Applied: b.Applied,
		Next: b.Next.Sequence, NextStatus: b.NextStatus, NextID: b.Next.ID,
		Error: clip(firstLine(b.Next.Error), 120), Waiting: b.Waiting, Since: formatTime(b.Since), Stuck: b.Stuck(),
	}
	if b.NextStatus == "pending" && !v.Stuck {
		v.NextStatus = "due"
	}
	if id, ok := ids[b.Next.ID]; ok && b.Next.ID != "" {
		v.NextLink = t.Link + "/" + strconv.FormatInt(id, 10)
	}
	return v
}

// blocked serves a group's blocked keys: the keys whose next event failed,
// waits for a retry, runs, or never arrived, with the events held behind.
func (c *Console) blocked(rq *request, t *target) error {
	cs := c.consumer(t.Group)
	keys, err := cs.BlockedKeys(rq.ctx(), maxBlocked+1)
	if err != nil {
		return err
	}
	bp := &blockedPage{T: t, Skip: !c.opts.ReadOnly, Limited: len(keys) > maxBlocked}
	keys = keys[:min(len(keys), maxBlocked)]
	var msgIDs []string
	for _, b := range keys {
		if b.Next.ID != "" {
			msgIDs = append(msgIDs, b.Next.ID)
		}
	}
	ids, err := cs.RowIDs(rq.ctx(), msgIDs...)
	if err != nil {
		return err
	}
	for _, b := range keys {
		bp.Keys = append(bp.Keys, newBlockedView(t, b, ids))
	}
	q := rq.r.URL.Query()
	if q.Get("done") == "skip-next" {
		bp.Flash = fmt.Sprintf("Skipped event %s of key %q", clip(q.Get("seq"), 20), clip(q.Get("key"), 64))
	}
	c.render(rq, "blocked", http.StatusOK, bp)
	return nil
}

type skipPage struct {
	T     *target
	Key   blockedView
	Back  string
	Error string // the next event's whole last error
}

// skip serves the "skip the next event of this key" POST: the first shows
// the key and its next event and asks for confirmation; the second, with
// confirm=yes, skips it if it is still the key's next event, logs it and
// redirects to the blocked keys.
func (c *Console) skip(rq *request, t *target) error {
	if err := c.checkAction(rq); err != nil {
		return err
	}
	f := rq.r.PostForm
	source, topic, key := f.Get("source"), f.Get("topic"), f.Get("key")
	for _, s := range []struct{ name, v string }{{"source", source}, {"topic", topic}, {"key", key}} {
		if err := checkFilterText(s.name, s.v); err != nil {
			return err
		}
	}
	seq, err := parseID("seq", f.Get("seq"))
	if err != nil {
		return err
	}
	cs := c.consumer(t.Group)
	b, blocked, err := cs.BlockedKey(rq.ctx(), source, topic, key)
	if err != nil {
		return err
	}
	if !blocked || b.Next.Sequence != seq {
		return &httpError{http.StatusConflict, fmt.Sprintf(
			"key %q (topic %q, source %q) no longer waits for its event %d: it stands at %d, its next event is %s; nothing was skipped",
			clip(key, 64), clip(topic, 64), clip(source, 64), seq, b.Applied, b.NextStatus)}
	}
	blockedLink := t.Link + "/blocked"
	if f.Get("confirm") != "yes" {
		ids, err := cs.RowIDs(rq.ctx(), b.Next.ID)
		if err != nil {
			return err
		}
		c.render(rq, "skip", http.StatusOK, &skipPage{T: t, Key: newBlockedView(t, b, ids), Back: blockedLink, Error: b.Next.Error})
		return nil
	}
	id, err := cs.SkipNext(rq.ctx(), source, topic, key)
	c.log.Info("console: action", "user", rq.user, "action", "skip-next", "table", t.Table, "group", t.Group,
		"source", source, "topic", topic, "key", key, "sequence", seq, "message_id", id, "count", boolCount(err == nil), "ok", err == nil)
	if err != nil {
		return err
	}
	v := url.Values{"done": {"skip-next"}, "key": {key}, "seq": {strconv.FormatInt(seq, 10)}}
	http.Redirect(rq.w, rq.r, blockedLink+"?"+v.Encode(), http.StatusSeeOther)
	return nil
}

func boolCount(ok bool) int {
	if ok {
		return 1
	}
	return 0
}

// behindView is what a row's page shows of its place in its key's order.
type behindView struct {
	Sequence int64
	Rows     []rowView
	More     bool
	// Blocked offers the skip of this row, when it is its key's blocked
	// next event and actions are shown.
	Blocked bool
	Key     blockedView
}

// behind returns the held events behind r in its group, and whether r is
// the event its blocked key waits for.
func (c *Console) behind(rq *request, t *target, r eventgen.StoredRow) (*behindView, error) {
	if t.Group == "" || r.Sequence == 0 {
		return nil, nil
	}
	cs := c.consumer(t.Group)
	rows, err := cs.Behind(rq.ctx(), r.Source, r.Topic, r.Key, r.Sequence, maxBehind+1)
	if err != nil {
		return nil, err
	}
	bv := &behindView{Sequence: r.Sequence, More: len(rows) > maxBehind}
	for _, h := range rows[:min(len(rows), maxBehind)] {
		bv.Rows = append(bv.Rows, listRow(t, h))
	}
	if c.opts.ReadOnly {
		return bv, nil
	}
	b, blocked, err := cs.BlockedKey(rq.ctx(), r.Source, r.Topic, r.Key)
	if err != nil {
		return nil, err
	}
	if blocked && b.Next.ID == r.MessageID {
		bv.Blocked, bv.Key = true, newBlockedView(t, b, nil)
	}
	return bv, nil
}
