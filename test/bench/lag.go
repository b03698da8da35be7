package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lag: commit-to-UNLINK latency observed from outside, through keyspace
// notifications, under 1,000 tx/s of background writes. A probe's commit
// is the server's clock at the end of its INSERT (autocommit: the commit
// follows at once); its UNLINK is when the deletion event reaches a bare
// RESP connection here.
func (b *bench) lag() error {
	t, m, err := b.lagRun("cdcd_lag", *probes)
	if err != nil {
		return err
	}
	logf("lag: %.0f transactions in %.0f round trips, paced %.3fs", m["cdcd_apply_batch_transactions_sum"], m["cdcd_apply_batch_transactions_count"], m["cdcd_apply_paced_seconds_total"])
	q := func(d []time.Duration, q float64) string { return quantile(d, q).String() }
	b.row(fmt.Sprintf("lag, %d probes at 1,000 tx/s: p50", len(t.lat)), q(t.lat, 0.50), "target ≤ 1ms; from sending the INSERT "+q(t.fromSend, 0.50)+", its round trip "+q(t.rtt, 0.50))
	b.row("lag: p99", q(t.lat, 0.99), "target ≤ 5ms; from sending "+q(t.fromSend, 0.99)+", round trip "+q(t.rtt, 0.99))
	b.row("lag: max", q(t.lat, 1), "from sending "+q(t.fromSend, 1)+", round trip "+q(t.rtt, 1))
	return nil
}

// lagTimes are the probes' latencies (see probeTimes), one element each.
type lagTimes struct{ lat, fromSend, rtt []time.Duration }

func (t *lagTimes) add(o lagTimes) {
	t.lat, t.fromSend, t.rtt = append(t.lat, o.lat...), append(t.fromSend, o.fromSend...), append(t.rtt, o.rtt...)
}

// lagRun creates slot, runs cdcd on it (env added to its environment) and
// times n probes under the background load. It returns the probes' times
// and cdcd's metrics at the end; the slot is left behind.
func (b *bench) lagRun(slot string, n int, env ...string) (lagTimes, map[string]float64, error) {
	if err := b.settle(); err != nil {
		return lagTimes{}, nil, err
	}
	if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		return lagTimes{}, nil, err
	}
	d, err := b.startCdcd(slot, env...)
	if err != nil {
		return lagTimes{}, nil, err
	}
	defer d.stop()
	time.Sleep(time.Second)
	if err := b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return lagTimes{}, nil, err
	}
	defer b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "")
	deleted, closeWatch, err := watchDeletions(b.rds.Addr)
	if err != nil {
		return lagTimes{}, nil, err
	}
	defer closeWatch()
	bg := b.background(n/20 + 5)
	time.Sleep(2 * time.Second)
	probe, err := b.syncConn()
	if err != nil {
		return lagTimes{}, nil, err
	}
	defer probe.Release()
	var t lagTimes
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("nodb:%d:climate", 2000000000+i)
		p, err := b.probe(probe, deleted, key, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 'probe', 'h') RETURNING clock_timestamp()`,
			2000000000+i)
		if err != nil {
			return lagTimes{}, nil, fmt.Errorf("probe %d: %w", i, err)
		}
		t.add(lagTimes{[]time.Duration{p.lat}, []time.Duration{p.fromSend}, []time.Duration{p.rtt}})
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-bg; err != nil {
		return lagTimes{}, nil, err
	}
	return t, d.metrics(), nil
}

// background runs 1,000 tx/s of INSERTs into topics (each invalidating
// summary.core) for seconds, and reports pgbench's end on the channel.
func (b *bench) background(seconds int) <-chan error {
	bg := make(chan error, 1)
	go func() {
		_, err := b.pgbench("INSERT INTO topics (title) VALUES ('background');\n", "-c", "2", "-j", "2", "-R", "1000",
			"-T", strconv.Itoa(seconds))
		bg <- err
	}()
	return bg
}

// syncConn returns a connection that commits synchronously. The private
// server commits asynchronously; probes commit as a production server does,
// flushing WAL at commit, so the walsender sees them at once.
func (b *bench) syncConn() (*pgxpool.Conn, error) {
	conn, err := b.db.Acquire(b.ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(b.ctx, `SET synchronous_commit = on`); err != nil {
		conn.Release()
		return nil, err
	}
	return conn, nil
}

// probeTimes are one probe's latencies: from its commit to its key's
// deletion, from sending its statement to the deletion, and the
// statement's own round trip.
type probeTimes struct{ lat, fromSend, rtt time.Duration }

// probe sets key, runs sql on conn (an autocommit statement whose commit
// invalidates key and which returns clock_timestamp() at its end: the commit
// follows at once), and waits for key's deletion event on deleted, ignoring
// the events of other keys.
func (b *bench) probe(conn *pgxpool.Conn, deleted <-chan deletion, key, sql string, args ...any) (probeTimes, error) {
	if err := b.rdb.Set(b.ctx, key, "x", 0).Err(); err != nil {
		return probeTimes{}, err
	}
	start := time.Now()
	var committed time.Time
	if err := conn.QueryRow(b.ctx, sql, args...).Scan(&committed); err != nil {
		return probeTimes{}, err
	}
	rtt := time.Since(start)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case d := <-deleted:
			if d.key == key {
				return probeTimes{d.at.Sub(committed), d.at.Sub(start), rtt}, nil
			}
		case <-timeout:
			return probeTimes{}, fmt.Errorf("%s never invalidated", key)
		}
	}
}

// quantile returns the q-quantile of d (which it sorts), to 10µs.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))].Round(10 * time.Microsecond)
}

type deletion struct {
	key string
	at  time.Time
}

// watchDeletions subscribes to deletion events on a connection of its own
// and stamps each as soon as it is read: no client library in between.
func watchDeletions(addr string) (<-chan deletion, func(), error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write([]byte("SUBSCRIBE __keyevent@0__:del\r\n")); err != nil {
		conn.Close()
		return nil, nil, err
	}
	rd := bufio.NewReader(conn)
	if _, err := readRESP(rd); err != nil { // the subscription's confirmation
		conn.Close()
		return nil, nil, err
	}
	out := make(chan deletion, 4096)
	go func() {
		for {
			msg, err := readRESP(rd)
			if err != nil {
				return
			}
			at := time.Now()
			if len(msg) == 3 && msg[0] == "message" {
				out <- deletion{msg[2], at}
			}
		}
	}()
	return out, func() { conn.Close() }, nil
}

// readRESP reads one array of bulk strings or integers.
func readRESP(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[0] != '*' {
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	out := make([]string, 0, n)
	for range n {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		switch line[0] {
		case ':':
			out = append(out, strings.TrimSpace(line[1:]))
		case '$':
			size, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
			buf := make([]byte, size+2)
			if _, err := io.ReadFull(rd, buf); err != nil {
				return nil, err
			}
			out = append(out, string(buf[:size]))
		default:
			return nil, fmt.Errorf("unexpected element %q", line)
		}
	}
	return out, nil
}
