package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
)

// drain: the same backlog drained from slots created at the same LSN,
// alternating pg_recvlogical and cdcd.
func (b *bench) drain() error {
	slots := []string{"recv_a", "cdcd_a", "recv_b", "cdcd_b"}
	for _, s := range slots {
		if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
			return err
		}
	}
	logf("building the backlog: %d small transactions and 2 bulk updates of %d rows", *smallTx, *bulkRows)
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, *bulkRows); err != nil {
		return err
	}
	if _, err := b.pgbench("\\set r random(1, 100000)\nINSERT INTO climate_runs (run_id, scenario, hazard) VALUES (:r, 's', 'h');\n",
		"-c", "4", "-j", "2", "-t", strconv.Itoa(*smallTx/4)); err != nil {
		return err
	}
	for _, v := range []string{"a", "b"} {
		if err := b.exec(`UPDATE climate_runs SET scenario = $1 WHERE id <= $2`, v, *bulkRows); err != nil {
			return err
		}
	}
	// The last transaction is the only one that touches the summary core:
	// its key is gone when cdcd has applied the whole backlog.
	if err := b.exec(`INSERT INTO topics (title) VALUES ('last')`); err != nil {
		return err
	}
	end := b.lsn()
	if err := b.settle(); err != nil {
		return err
	}
	changes := *bulkRows + *smallTx/4*4 + 2**bulkRows + 1
	logf("backlog: %d changes, ending at %s", changes, end)

	recv, err := testenv.Tool("pg_recvlogical")
	if err != nil {
		return err
	}
	var rWall, rCPU, cWall, cCPU []time.Duration
	var rss int64
	for i, pair := range [][2]string{{"recv_a", "cdcd_a"}, {"recv_b", "cdcd_b"}} {
		start := time.Now()
		cmd := exec.Command(recv, "-d", b.dbURL, "--slot", pair[0], "--start", "--endpos", end.String(),
			"-o", "proto_version=1", "-o", "publication_names=cdcd", "-f", "/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pg_recvlogical: %v\n%s", err, out)
		}
		rWall = append(rWall, time.Since(start))
		rCPU = append(rCPU, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())

		if err := b.rdb.Set(b.ctx, sentinel, "x", 0).Err(); err != nil {
			return err
		}
		start = time.Now()
		d, err := b.startCdcd(pair[1])
		if err != nil {
			return err
		}
		var prof <-chan error
		if i == 0 {
			prof = d.profile("drain", int(rWall[i].Seconds()*0.8))
		}
		for b.rdb.Exists(b.ctx, sentinel).Val() == 1 {
			time.Sleep(2 * time.Millisecond)
		}
		cWall = append(cWall, time.Since(start))
		cCPU = append(cCPU, runTime(d.cmd.Process.Pid))
		rss = max(rss, peakRSS(d.cmd.Process.Pid))
		if prof != nil {
			if err := <-prof; err != nil {
				return fmt.Errorf("profile: %w", err)
			}
		}
		d.stop()
		logf("drain round %d: pg_recvlogical %s, cdcd %s", i+1, rWall[i].Round(time.Millisecond), cWall[i].Round(time.Millisecond))
	}
	for _, s := range slots {
		if err := b.dropSlot(s); err != nil {
			return err
		}
	}
	rw, cw, rc, cc := median(rWall), median(cWall), median(rCPU), median(cCPU)
	b.row(fmt.Sprintf("drain %dk changes: wall", changes/1000), fmt.Sprintf("%s (%.2f×)", cw.Round(time.Millisecond), cw.Seconds()/rw.Seconds()), "pg_recvlogical "+rw.Round(time.Millisecond).String())
	b.row("drain: CPU", fmt.Sprintf("%s (%.2f×)", cc.Round(time.Millisecond), cc.Seconds()/max(rc.Seconds(), 0.001)), "pg_recvlogical "+rc.Round(time.Millisecond).String())
	b.row("drain: changes/s", fmt.Sprintf("%.0f", float64(changes)/cw.Seconds()), fmt.Sprintf("%.0f", float64(changes)/rw.Seconds()))
	b.row("drain: peak RSS", mb(rss), "")
	return nil
}
