package console

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// card is one table's summary on the overview.
type card struct {
	Title  string
	Link   string
	Counts []countView
	Oldest string
	Chart  chart
	// Blocked links to a group's blocked keys; BlockedKeys and
	// FailedKeys count them, and those on a failed event.
	Blocked                 string
	BlockedKeys, FailedKeys string
}

type countView struct {
	Status string
	N      string
	Link   string
}

// chart is the last hour's throughput, stacked bars drawn as inline SVG.
type chart struct {
	Width, Height int
	Bars          []bar
	Legend        []legendItem
	// Peak is the most rows of a minute; the bars are drawn to a scale
	// of at least 1.
	Peak  int64
	Total int64
	Label string
}

type bar struct {
	X, Y, W, H int
	Class      string
	Title      string
}

type legendItem struct {
	Class, Label string
	Total        int64
}

func (c *Console) overview(rq *request) error {
	var cards []card
	if o := c.outbox; o != nil {
		st, err := o.Stats(rq.ctx())
		if err != nil {
			return err
		}
		tp, err := o.Throughput(rq.ctx())
		if err != nil {
			return err
		}
		t, _ := c.outboxTarget()
		cards = append(cards, card{
			Title: t.Title, Link: t.Link, Oldest: age(st.OldestPending),
			Counts: counts(t.Link, []countView{
				{"scheduled", count(st.Scheduled), ""}, {"pending", count(st.Pending), ""},
				{"processing", count(st.Processing), ""}, {"failed", count(st.Failed), ""},
				{"published", history(st.Published, st.HistoryCapped), ""},
			}),
			Chart: drawChart(tp, []string{"published"}, "events published per minute"),
		})
	}
	for _, cs := range c.consumers {
		st, err := cs.Stats(rq.ctx())
		if err != nil {
			return err
		}
		tp, err := cs.Throughput(rq.ctx())
		if err != nil {
			return err
		}
		t, _ := c.inboxTarget(cs.Group())
		cards = append(cards, card{
			Title: t.Title, Link: t.Link, Oldest: age(st.OldestPending), Blocked: t.Link + "/blocked",
			BlockedKeys: history(st.BlockedKeys, st.BlockedKeys >= eventgen.StatsHistoryLimit), FailedKeys: count(st.FailedKeys),
			Counts: counts(t.Link, []countView{
				{"held", count(st.Held), ""}, {"pending", count(st.Pending), ""}, {"processing", count(st.Processing), ""},
				{"failed", count(st.Failed), ""}, {"succeeded", history(st.Succeeded, st.HistoryCapped), ""},
				{"skipped", history(st.Skipped, st.HistoryCapped), ""},
			}),
			Chart: drawChart(tp, []string{"succeeded", "skipped", "failed"}, "messages handled per minute"),
		})
	}
	c.render(rq, "overview", http.StatusOK, cards)
	return nil
}

// counts links each count to the list of its status.
func counts(link string, cs []countView) []countView {
	for i := range cs {
		cs[i].Link = link + "?status=" + url.QueryEscape(cs[i].Status)
	}
	return cs
}

func count(n int64) string { return strconv.FormatInt(n, 10) }

func history(n int64, capped bool) string {
	if capped {
		return count(n) + "+"
	}
	return count(n)
}

func age(d time.Duration) string {
	if d == 0 {
		return "none due"
	}
	return d.Round(100 * time.Millisecond).String()
}

// Chart geometry, in SVG user units.
const (
	chartWidth  = 600
	chartHeight = 120
	chartTop    = 4
)

// drawChart stacks the series of statuses, one bar per minute.
func drawChart(tp eventgen.Throughput, statuses []string, label string) chart {
	minutes := 60
	totals := make([]int64, minutes)
	ch := chart{Width: chartWidth, Height: chartHeight, Label: label}
	for _, s := range statuses {
		var sum int64
		for i, n := range tp.Counts[s] {
			if i < minutes {
				totals[i] += n
				sum += n
			}
		}
		ch.Legend = append(ch.Legend, legendItem{Class: "s-" + s, Label: s, Total: sum})
		ch.Total += sum
	}
	ch.Peak = slices.Max(totals)
	scale := max(1, ch.Peak)
	w := chartWidth / minutes
	plot := chartHeight - chartTop
	for i := range minutes {
		y := chartHeight
		at := tp.Start.Add(time.Duration(i) * time.Minute).Format("15:04")
		for _, s := range statuses {
			n := int64(0)
			if i < len(tp.Counts[s]) {
				n = tp.Counts[s][i]
			}
			if n == 0 {
				continue
			}
			h := max(1, int(n*int64(plot)/scale))
			y -= h
			ch.Bars = append(ch.Bars, bar{X: i * w, Y: y, W: w - 1, H: h, Class: "s-" + s, Title: fmt.Sprintf("%s UTC: %d %s", at, n, s)})
		}
	}
	return ch
}
