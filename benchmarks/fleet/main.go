// Command fleet holds N Centrifugo client connections (centrifuge-go) for the fan-out benchmark
// (benchmarks/fanout.py builds and drives it) and measures what each client receives.
//
// It reads a plan (JSON: the nodes' websocket URLs, and per client its connection token, its
// node and its channels with subscription tokens, all made by the Django side), connects every
// client, subscribes every channel, prints one "ready" JSON line, then answers commands on
// stdin, one JSON line each on stdout:
//
//	report FROM TO EXPECTED   the changes with seq in [FROM, TO): per change the deliveries and
//	                          the last reader's receive time minus the commit stamp; per-delivery
//	                          percentiles. Waits until EXPECTED deliveries arrived or none came
//	                          for 2 s.
//	totals                    duplicates, disconnects, errors since start
//	quit                      disconnect everyone and exit
//
// A publication's data is instant_signals' envelope; data.fields carries seq (the publisher's
// change number), point (the load step) and stamp (time.time() taken in save(), before COMMIT).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

type subPlan struct {
	Channel string `json:"channel"`
	Token   string `json:"token"`
}

type clientPlan struct {
	Node  int       `json:"node"`
	Token string    `json:"token"`
	Subs  []subPlan `json:"subs"`
}

type plan struct {
	Nodes   []string     `json:"nodes"`
	MaxSeq  int          `json:"max_seq"`
	Clients []clientPlan `json:"clients"`
}

type envelope struct {
	Data struct {
		Fields struct {
			Seq   int64   `json:"seq"`
			Point int     `json:"point"`
			Stamp float64 `json:"stamp"`
		} `json:"fields"`
	} `json:"data"`
}

// Log-spaced latency histogram: bucket i holds latencies around exp(i/100) µs (1 % steps).
const buckets = 2400

type histogram struct{ counts [buckets]atomic.Int64 }

func (h *histogram) add(us float64) {
	i := 0
	if us > 1 {
		i = int(math.Log(us) * 100)
	}
	if i >= buckets {
		i = buckets - 1
	}
	h.counts[i].Add(1)
}

func (h *histogram) quantiles(qs []float64) (int64, []float64) {
	var total int64
	snapshot := make([]int64, buckets)
	for i := range snapshot {
		snapshot[i] = h.counts[i].Load()
		total += snapshot[i]
	}
	out := make([]float64, len(qs))
	if total == 0 {
		return 0, out
	}
	for j, q := range qs {
		rank := int64(math.Ceil(q * float64(total)))
		var seen int64
		for i, c := range snapshot {
			seen += c
			if seen >= rank {
				out[j] = math.Exp(float64(i)/100) / 1000 // ms
				break
			}
		}
	}
	return total, out
}

type fleet struct {
	counts   []atomic.Int32 // deliveries per seq
	lastRecv []atomic.Int64 // latest receive time per seq (unix ns)
	stamps   []atomic.Int64 // commit stamp per seq (unix ns)
	points   sync.Map       // point -> *histogram (commit -> each delivery)
	received atomic.Int64

	duplicates, outOfRange, unparsed       atomic.Int64
	disconnects, subErrors, unsubscribed   atomic.Int64
	connected, subscribed, connectFailures atomic.Int64
}

func (f *fleet) hist(point int) *histogram {
	if h, ok := f.points.Load(point); ok {
		return h.(*histogram)
	}
	h, _ := f.points.LoadOrStore(point, &histogram{})
	return h.(*histogram)
}

func (f *fleet) onPublication(last *int64, data []byte) {
	now := time.Now().UnixNano()
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Data.Fields.Stamp == 0 {
		f.unparsed.Add(1)
		return
	}
	seq := env.Data.Fields.Seq
	if seq <= *last { // one publisher, commits in order: a channel's seqs only grow
		f.duplicates.Add(1)
		return
	}
	*last = seq
	if seq < 0 || seq >= int64(len(f.counts)) {
		f.outOfRange.Add(1)
		return
	}
	stamp := int64(env.Data.Fields.Stamp * 1e9)
	f.stamps[seq].Store(stamp)
	f.counts[seq].Add(1)
	for {
		old := f.lastRecv[seq].Load()
		if now <= old || f.lastRecv[seq].CompareAndSwap(old, now) {
			break
		}
	}
	f.hist(env.Data.Fields.Point).add(float64(now-stamp) / 1e3)
	f.received.Add(1)
}

func (f *fleet) start(p *plan, concurrency int) []*centrifuge.Client {
	clients := make([]*centrifuge.Client, len(p.Clients))
	var wg sync.WaitGroup
	slots := make(chan struct{}, concurrency)
	for i, cp := range p.Clients {
		slots <- struct{}{}
		wg.Add(1)
		cp := cp
		c := centrifuge.NewProtobufClient(p.Nodes[cp.Node], centrifuge.Config{
			Token: cp.Token, Name: "instant-signals-fleet",
			ReadTimeout: 30 * time.Second, WriteTimeout: 10 * time.Second,
			HandshakeTimeout: 30 * time.Second, MaxServerPingDelay: 60 * time.Second,
		})
		clients[i] = c
		pending := atomic.Int32{}
		pending.Store(int32(len(cp.Subs)) + 1)
		var once sync.Once
		done := func() {
			if pending.Add(-1) == 0 {
				once.Do(func() { <-slots; wg.Done() })
			}
		}
		c.OnConnected(func(centrifuge.ConnectedEvent) { f.connected.Add(1); done() })
		c.OnDisconnected(func(centrifuge.DisconnectedEvent) { f.disconnects.Add(1) })
		c.OnError(func(centrifuge.ErrorEvent) {})
		for _, sp := range cp.Subs {
			sub, err := c.NewSubscription(sp.Channel, centrifuge.SubscriptionConfig{Token: sp.Token})
			if err != nil {
				f.subErrors.Add(1)
				done()
				continue
			}
			var last int64 = -1
			var first sync.Once
			sub.OnSubscribed(func(centrifuge.SubscribedEvent) {
				first.Do(func() { f.subscribed.Add(1); done() })
			})
			sub.OnError(func(centrifuge.SubscriptionErrorEvent) { f.subErrors.Add(1) })
			sub.OnUnsubscribed(func(centrifuge.UnsubscribedEvent) { f.unsubscribed.Add(1) })
			sub.OnPublication(func(e centrifuge.PublicationEvent) { f.onPublication(&last, e.Data) })
			_ = sub.Subscribe()
		}
		if err := c.Connect(); err != nil {
			f.connectFailures.Add(1)
			once.Do(func() { <-slots; wg.Done() })
		}
	}
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(120 * time.Second):
	}
	return clients
}

func (f *fleet) report(from, to, expected int64) map[string]any {
	sum := func() int64 {
		var n int64
		for s := from; s < to && s < int64(len(f.counts)); s++ {
			n += int64(f.counts[s].Load())
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	got, lastChange := sum(), time.Now()
	for got < expected && time.Now().Before(deadline) && time.Since(lastChange) < 2*time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := sum(); n != got {
			got, lastChange = n, time.Now()
		}
	}
	counts := []int32{}
	lastMs := []float64{}
	for s := from; s < to && s < int64(len(f.counts)); s++ {
		n := f.counts[s].Load()
		counts = append(counts, n)
		if n == 0 {
			lastMs = append(lastMs, -1)
		} else {
			lastMs = append(lastMs, float64(f.lastRecv[s].Load()-f.stamps[s].Load())/1e6)
		}
	}
	return map[string]any{"from": from, "to": to, "deliveries": got, "counts": counts,
		"last_reader_ms": lastMs}
}

func (f *fleet) pointStats(point int) map[string]any {
	total, q := f.hist(point).quantiles([]float64{0.5, 0.95, 0.99, 1.0})
	return map[string]any{"deliveries": total, "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
		"max_ms": q[3]}
}

func (f *fleet) totals() map[string]any {
	return map[string]any{
		"received": f.received.Load(), "duplicates": f.duplicates.Load(),
		"out_of_range": f.outOfRange.Load(), "unparsed": f.unparsed.Load(),
		"disconnects": f.disconnects.Load(), "subscription_errors": f.subErrors.Load(),
		"unsubscribed": f.unsubscribed.Load(), "connected": f.connected.Load(),
		"subscribed": f.subscribed.Load(), "connect_failures": f.connectFailures.Load(),
		"goroutines": runtime.NumGoroutine(), "rss_bytes": rss(),
	}
}

func rss() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func emit(v any) {
	out, _ := json.Marshal(v)
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleet PLAN.json [connect-concurrency]")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var p plan
	if err := json.Unmarshal(raw, &p); err != nil {
		fmt.Fprintln(os.Stderr, "plan:", err)
		os.Exit(1)
	}
	raw = nil
	concurrency := 100
	if len(os.Args) > 2 {
		concurrency, _ = strconv.Atoi(os.Args[2])
	}
	f := &fleet{counts: make([]atomic.Int32, p.MaxSeq), lastRecv: make([]atomic.Int64, p.MaxSeq),
		stamps: make([]atomic.Int64, p.MaxSeq)}
	wanted := 0
	for _, c := range p.Clients {
		wanted += len(c.Subs)
	}
	began := time.Now()
	clients := f.start(&p, concurrency)
	p.Clients = nil
	runtime.GC()
	ready := f.totals()
	ready["ready"] = true
	ready["clients"] = len(clients)
	ready["subscriptions_wanted"] = wanted
	ready["connect_seconds"] = time.Since(began).Seconds()
	emit(ready)

	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		words := strings.Fields(scanner.Text())
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case "report":
			if len(words) != 5 {
				emit(map[string]any{"error": "report POINT FROM TO EXPECTED"})
				continue
			}
			point, _ := strconv.Atoi(words[1])
			from, _ := strconv.ParseInt(words[2], 10, 64)
			to, _ := strconv.ParseInt(words[3], 10, 64)
			expected, _ := strconv.ParseInt(words[4], 10, 64)
			out := f.report(from, to, expected)
			out["per_delivery"] = f.pointStats(point)
			emit(out)
		case "totals":
			emit(f.totals())
		case "quit":
			var wg sync.WaitGroup
			for _, c := range clients {
				wg.Add(1)
				go func(c *centrifuge.Client) { defer wg.Done(); c.Close() }(c)
			}
			wg.Wait()
			emit(f.totals())
			return
		default:
			emit(map[string]any{"error": "unknown command " + words[0]})
		}
	}
}
