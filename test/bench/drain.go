package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
)

// drain: the same backlog drained from slots created at the same LSN,
// alternating pg_recvlogical and cdcd.
func (b *bench) drain() error {
	slots := []string{"recv_a", "cdcd_a", "recv_b", "cdcd_b"}
	changes, end, err := b.backlog(slots)
	if err != nil {
		return err
	}
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

		profile := ""
		if i == 0 {
			profile = "drain"
		}
		run, err := b.drainOnce(pair[1], b.standalone(), profile, rWall[i])
		if err != nil {
			return err
		}
		cWall, cCPU, rss = append(cWall, run.wall), append(cCPU, run.cpu), max(rss, run.rss)
		logf("drain round %d: pg_recvlogical %s, cdcd %s", i+1, rWall[i].Round(time.Millisecond), cWall[i].Round(time.Millisecond))
	}
	if err := b.dropSlots(slots); err != nil {
		return err
	}
	rw, cw, rc, cc := median(rWall), median(cWall), median(rCPU), median(cCPU)
	b.row(fmt.Sprintf("drain %dk changes: wall", changes/1000), fmt.Sprintf("%s (%.2f×)", cw.Round(time.Millisecond), cw.Seconds()/rw.Seconds()), "pg_recvlogical "+rw.Round(time.Millisecond).String())
	b.row("drain: CPU", fmt.Sprintf("%s (%.2f×)", cc.Round(time.Millisecond), cc.Seconds()/max(rc.Seconds(), 0.001)), "pg_recvlogical "+rc.Round(time.Millisecond).String())
	b.row("drain: changes/s", fmt.Sprintf("%.0f", float64(changes)/cw.Seconds()), fmt.Sprintf("%.0f", float64(changes)/rw.Seconds()))
	b.row("drain: peak RSS", mb(rss), "")
	return nil
}

// backlog creates slots at the current LSN and then writes the drain's
// backlog behind them: a bulk INSERT, single-row transactions from pgbench,
// two bulk UPDATEs and a last transaction, the only one that touches the
// summary core. It returns the number of changes and the LSN at the end.
func (b *bench) backlog(slots []string) (int, pglogrepl.LSN, error) {
	for _, s := range slots {
		if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
			return 0, 0, err
		}
	}
	logf("building the backlog: %d small transactions and 2 bulk updates of %d rows", *smallTx, *bulkRows)
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, *bulkRows); err != nil {
		return 0, 0, err
	}
	if _, err := b.pgbench("\\set r random(1, 100000)\nINSERT INTO climate_runs (run_id, scenario, hazard) VALUES (:r, 's', 'h');\n",
		"-c", "4", "-j", "2", "-t", strconv.Itoa(*smallTx/4)); err != nil {
		return 0, 0, err
	}
	for _, v := range []string{"a", "b"} {
		if err := b.exec(`UPDATE climate_runs SET scenario = $1 WHERE id <= $2`, v, *bulkRows); err != nil {
			return 0, 0, err
		}
	}
	// Its key is gone when cdcd has applied the whole backlog.
	if err := b.exec(`INSERT INTO topics (title) VALUES ('last')`); err != nil {
		return 0, 0, err
	}
	end := b.lsn()
	if err := b.settle(); err != nil {
		return 0, 0, err
	}
	changes := *bulkRows + *smallTx/4*4 + 2**bulkRows + 1
	logf("backlog: %d changes, ending at %s", changes, end)
	return changes, end, nil
}

// drainRun is one cdcd's drain of a backlog: its wall time from start to
// the last transaction's key gone, its CPU time, peak RSS and apply batches
// (cdcd_apply_batch_transactions_count), and Redis's CPU time and commands
// meanwhile.
type drainRun struct {
	wall, cpu, redisCPU time.Duration
	rss, commands       int64
	batches             float64
}

// drainOnce starts cdcd on slot against target and waits until it has
// applied the backlog's last transaction. With -pprof and a profile name,
// it saves a CPU profile over 80% of expect, the drain's expected time.
func (b *bench) drainOnce(slot string, t target, profile string, expect time.Duration) (drainRun, error) {
	if err := t.rdb.Set(b.ctx, sentinel, "x", 0).Err(); err != nil {
		return drainRun{}, err
	}
	redis0, commands0 := t.stats()
	start := time.Now()
	d, err := b.startCdcd(slot, t.env...)
	if err != nil {
		return drainRun{}, err
	}
	defer d.stop()
	var prof <-chan error
	if profile != "" {
		prof = d.profile(profile, int(expect.Seconds()*0.8))
	}
	for t.rdb.Exists(b.ctx, sentinel).Val() == 1 {
		time.Sleep(2 * time.Millisecond)
	}
	run := drainRun{wall: time.Since(start), cpu: runTime(d.cmd.Process.Pid), rss: peakRSS(d.cmd.Process.Pid)}
	redis1, commands1 := t.stats()
	run.redisCPU, run.commands = redis1-redis0, commands1-commands0
	run.batches = d.metrics()["cdcd_apply_batch_transactions_count"]
	if prof != nil {
		if err := <-prof; err != nil {
			return drainRun{}, fmt.Errorf("profile: %w", err)
		}
	}
	return run, nil
}

func (b *bench) dropSlots(slots []string) error {
	for _, s := range slots {
		if err := b.dropSlot(s); err != nil {
			return err
		}
	}
	return nil
}
