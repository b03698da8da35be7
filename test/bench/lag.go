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
)

// lag: commit-to-UNLINK latency observed from outside, through keyspace
// notifications, under 1,000 tx/s of background writes. A probe's commit
// is the server's clock at the end of its INSERT (autocommit: the commit
// follows at once); its UNLINK is when the deletion event reaches a bare
// RESP connection here.
func (b *bench) lag() error {
	if err := b.settle(); err != nil {
		return err
	}
	if err := b.exec(`SELECT pg_create_logical_replication_slot('cdcd_lag', 'pgoutput')`); err != nil {
		return err
	}
	d, err := b.startCdcd("cdcd_lag")
	if err != nil {
		return err
	}
	defer d.stop()
	time.Sleep(time.Second)
	if err := b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	defer b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "")
	deleted, closeWatch, err := watchDeletions(b.rds.Addr)
	if err != nil {
		return err
	}
	defer closeWatch()
	bg := make(chan error, 1)
	go func() {
		_, err := b.pgbench("INSERT INTO topics (title) VALUES ('background');\n", "-c", "2", "-j", "2", "-R", "1000",
			"-T", strconv.Itoa(*probes/20+5))
		bg <- err
	}()
	time.Sleep(2 * time.Second)
	// The private server commits asynchronously; probes commit as a
	// production server does, flushing WAL at commit, so the walsender sees
	// them at once.
	probe, err := b.db.Acquire(b.ctx)
	if err != nil {
		return err
	}
	defer probe.Release()
	if _, err := probe.Exec(b.ctx, `SET synchronous_commit = on`); err != nil {
		return err
	}
	var lat, fromSend, rtt []time.Duration
	for i := 0; i < *probes; i++ {
		key := fmt.Sprintf("nodb:%d:climate", 2000000000+i)
		if err := b.rdb.Set(b.ctx, key, "x", 0).Err(); err != nil {
			return err
		}
		start := time.Now()
		var committed time.Time
		if err := probe.QueryRow(b.ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 'probe', 'h') RETURNING clock_timestamp()`,
			2000000000+i).Scan(&committed); err != nil {
			return err
		}
		rtt = append(rtt, time.Since(start))
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case d := <-deleted:
				if d.key == key {
					lat = append(lat, d.at.Sub(committed))
					fromSend = append(fromSend, d.at.Sub(start))
					break wait
				}
			case <-timeout:
				return fmt.Errorf("probe %d never invalidated", i)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-bg; err != nil {
		return err
	}
	m := d.metrics()
	logf("lag: %.0f transactions in %.0f round trips, paced %.3fs", m["cdcd_apply_batch_transactions_sum"], m["cdcd_apply_batch_transactions_count"], m["cdcd_apply_paced_seconds_total"])
	for _, d := range [][]time.Duration{lat, fromSend, rtt} {
		slices.Sort(d)
	}
	q := func(d []time.Duration, q float64) string {
		return d[min(len(d)-1, int(q*float64(len(d))))].Round(10 * time.Microsecond).String()
	}
	b.row(fmt.Sprintf("lag, %d probes at 1,000 tx/s: p50", len(lat)), q(lat, 0.50), "target ≤ 1ms; from sending the INSERT "+q(fromSend, 0.50)+", its round trip "+q(rtt, 0.50))
	b.row("lag: p99", q(lat, 0.99), "target ≤ 5ms; from sending "+q(fromSend, 0.99)+", round trip "+q(rtt, 0.99))
	b.row("lag: max", q(lat, 1), "from sending "+q(fromSend, 1)+", round trip "+q(rtt, 1))
	return nil
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
