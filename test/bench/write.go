package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
)

// writeCost: pgbench TPS on a rule table with cdcd consuming, with
// pg_recvlogical consuming, with no consumer, and with a NOTIFY trigger,
// alternating. Each consumer reads from a slot created just before its run
// and dropped after it, so no run starts with another's backlog.
func (b *bench) writeCost() error {
	script := "\\set r random(1, 100000)\nUPDATE climate_runs SET hazard = 'x' WHERE id = :r;\n"
	recv, err := testenv.Tool("pg_recvlogical")
	if err != nil {
		return err
	}
	// The UPDATEs need rows 1..100000 (the drain leaves more behind).
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard)
		SELECT g, 's', 'h' FROM generate_series(1, 100000 - (SELECT count(*) FROM climate_runs WHERE id <= 100000)) g`); err != nil {
		return err
	}
	// A warm-up run, not counted.
	if _, err := b.pgbench(script, "-c", "4", "-j", "2", "-T", strconv.Itoa(*pgbenchT)); err != nil {
		return err
	}
	tps := map[string][]float64{}
	var ratios []float64 // cdcd / pg_recvlogical, per round
	var recvCPU, cdcdCPU, redisCPU, recvWS, cdcdWS []time.Duration
	var batches, batched float64
	for round := 0; round < *rounds; round++ {
		// The two consumers run back to back, each first in every other
		// round, so that drift over the run favours neither.
		order := []string{"pg_recvlogical", "cdcd", "none", "trigger"}
		if round%2 == 1 {
			order = []string{"cdcd", "pg_recvlogical", "trigger", "none"}
		}
		for _, c := range order {
			var stop func() error
			var prof <-chan error
			var d *daemon
			pid := 0 // the consumer's
			slot := fmt.Sprintf("bench_w_%s_%d", strings.ReplaceAll(c, "_", ""), round)
			if err := b.settle(); err != nil {
				return err
			}
			switch c {
			case "pg_recvlogical", "cdcd":
				if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
					return err
				}
			}
			switch c {
			case "pg_recvlogical":
				cmd := exec.Command(recv, "-d", b.dbURL, "--slot", slot, "--start", "-o", "proto_version=1", "-o", "publication_names=cdcd", "-f", "/dev/null")
				if err := cmd.Start(); err != nil {
					return err
				}
				pid = cmd.Process.Pid
				stop = func() error {
					_ = cmd.Process.Signal(syscall.SIGINT)
					_ = cmd.Wait()
					return b.dropSlot(slot)
				}
			case "cdcd":
				var err error
				if d, err = b.startCdcd(slot); err != nil {
					return err
				}
				pid = d.cmd.Process.Pid
				stop = func() error {
					d.stop()
					return b.dropSlot(slot)
				}
			case "trigger":
				if err := b.exec(`CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN PERFORM pg_notify('cdcd', NEW.run_id::text); RETURN NEW; END $$;
					CREATE TRIGGER bench_notify AFTER UPDATE ON climate_runs FOR EACH ROW EXECUTE FUNCTION bench_notify()`); err != nil {
					return err
				}
				stop = func() error { return b.exec(`DROP TRIGGER bench_notify ON climate_runs`) }
			default:
				stop = func() error { return nil }
			}
			time.Sleep(time.Second)
			r0, s0 := b.redisCPU(), runTime(pid)
			var walsender int
			if pid != 0 {
				_ = b.db.QueryRow(b.ctx, `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&walsender)
			}
			w0 := runTime(walsender)
			if d != nil && round == 0 {
				prof = d.profile("write", *pgbenchT-1)
			}
			v, err := b.pgbench(script, "-c", "4", "-j", "2", "-T", strconv.Itoa(*pgbenchT))
			switch c {
			case "pg_recvlogical":
				recvCPU = append(recvCPU, runTime(pid)-s0)
				recvWS = append(recvWS, runTime(walsender)-w0)
				logf("pg_recvlogical: %s CPU, its walsender %s", recvCPU[len(recvCPU)-1], recvWS[len(recvWS)-1])
			case "cdcd":
				cdcdCPU = append(cdcdCPU, runTime(pid)-s0)
				redisCPU = append(redisCPU, b.redisCPU()-r0)
				cdcdWS = append(cdcdWS, runTime(walsender)-w0)
				m := d.metrics()
				batches += m["cdcd_apply_batch_transactions_count"]
				batched += m["cdcd_apply_batch_transactions_sum"]
				logf("cdcd: %s CPU, its walsender %s, Redis %s; %.0f transactions in %.0f round trips, paced %.2fs", cdcdCPU[len(cdcdCPU)-1], cdcdWS[len(cdcdWS)-1], redisCPU[len(redisCPU)-1],
					m["cdcd_apply_batch_transactions_sum"], m["cdcd_apply_batch_transactions_count"], m["cdcd_apply_paced_seconds_total"])
			}
			if serr := stop(); err == nil {
				err = serr
			}
			if err != nil {
				return err
			}
			if prof != nil {
				if err := <-prof; err != nil {
					return fmt.Errorf("profile: %w", err)
				}
			}
			tps[c] = append(tps[c], v)
			logf("write cost round %d: %s %.0f tps", round+1, c, v)
		}
		ratios = append(ratios, tps["cdcd"][round]/tps["pg_recvlogical"][round])
	}
	b.row("write cost: pgbench TPS while consuming", fmt.Sprintf("%.0f (%.2f× pg_recvlogical)", median(tps["cdcd"]), median(ratios)),
		fmt.Sprintf("pg_recvlogical %.0f, none %.0f, NOTIFY trigger %.0f", median(tps["pg_recvlogical"]), median(tps["none"]), median(tps["trigger"])))
	slices.Sort(ratios)
	b.row("write cost: cdcd/pg_recvlogical per round", fmt.Sprintf("%.2f", ratios), "the median is the ratio above")
	b.row(fmt.Sprintf("write cost: consumer CPU in %ds of pgbench", *pgbenchT), fmt.Sprintf("%s + Redis %s", median(cdcdCPU).Round(time.Millisecond), median(redisCPU).Round(time.Millisecond)),
		"pg_recvlogical "+median(recvCPU).Round(time.Millisecond).String())
	b.row("write cost: the consumer's walsender CPU", median(cdcdWS).Round(time.Millisecond).String(), "pg_recvlogical's "+median(recvWS).Round(time.Millisecond).String())
	b.row("write cost: transactions per Redis round trip", fmt.Sprintf("%.1f", batched/max(batches, 1)), "")
	return nil
}
