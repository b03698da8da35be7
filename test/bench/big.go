package main

import (
	"fmt"
	"time"
)

// bigTransaction: peak RSS while one transaction updates many rows.
func (b *bench) bigTransaction() error {
	if err := b.exec(`TRUNCATE climate_runs`); err != nil {
		return err
	}
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, *bigTx); err != nil {
		return err
	}
	if err := b.settle(); err != nil {
		return err
	}
	if err := b.exec(`SELECT pg_create_logical_replication_slot('cdcd_big', 'pgoutput')`); err != nil {
		return err
	}
	d, err := b.startCdcd("cdcd_big")
	if err != nil {
		return err
	}
	defer d.stop()
	if err := b.rdb.Set(b.ctx, sentinel, "x", 0).Err(); err != nil {
		return err
	}
	start := time.Now()
	if err := b.exec(`UPDATE climate_runs SET run_id = run_id + 1`); err != nil {
		return err
	}
	if err := b.exec(`INSERT INTO topics (title) VALUES ('last')`); err != nil {
		return err
	}
	for b.rdb.Exists(b.ctx, sentinel).Val() == 1 {
		time.Sleep(5 * time.Millisecond)
	}
	b.row(fmt.Sprintf("%dk-row transaction: peak RSS", *bigTx/1000), mb(peakRSS(d.cmd.Process.Pid)),
		fmt.Sprintf("applied %s after the UPDATE began", time.Since(start).Round(time.Millisecond)))
	return nil
}
