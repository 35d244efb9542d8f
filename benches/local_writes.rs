//! Local write throughput and latency, next to raw redb in the same run.
//!
//! Run: `cargo bench --bench local_writes` (release). Prints:
//! 1. durable writes/s through the table API vs raw redb inserts of the same records with the
//!    same durability (one `Durability::Immediate` commit each, same cache size), and their
//!    ratio (target >= 0.8);
//! 2. 16 concurrent writers through the table API (group commit) vs raw redb with one commit
//!    per write from 16 threads, and their ratio (target >= 10x); then the floor of any group
//!    commit of those writes: the table API's rows for the same keys, raw, 16 writes per commit,
//!    and the same with two rows (record + entry) and one (the record) per write;
//! 3. p50 / p99 latency of one durable write through the table API, next to the p50 / p99 of
//!    one raw redb commit (the floor: the fsync);
//! 4. the CPU time per write of each side (`/proc/self/stat`, the whole process), which bounds
//!    group commit once fsyncs are shared;
//! 5. where the table API's time goes on the store writer (its `tidesync_store_*` metrics,
//!    read from a Prometheus recorder the bench installs): per write, the wait for the writer
//!    thread, the writer's work in the transaction and the store's commit; the rest of a
//!    sequential write's time is the reply's hand-off and the caller; with 16 writers, how
//!    many writes share a commit;
//! 6. what the rows alone cost: raw redb committing, per write, (a) one row, (b) the record
//!    plus one outbox row (the least DESIGN invariant 1 allows), in the same table and in a
//!    second one, (c) the rows the table API writes (record, outbox entry, its two index rows,
//!    three meta rows, in five tables). (b)/(a) bounds the sequential ratio of any engine that
//!    keeps the invariant on redb; (c)/(a) bounds it for the current layout.
//!
//! Fairness: both sides write the same record bytes (`common::record`, ~260 bytes of JSON)
//! under the same key, into a fresh file in the same directory, with the same fsync policy
//! (`Durability::Immediate`) and the same redb cache size; which side runs first alternates
//! between runs. The table API does more per write (the outbox entry, its two index rows,
//! the queue depth, the clock): that is the cost being measured.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3; each figure is the median), `TIDESYNC_BENCH_WRITES`
//! (sequential writes per run, default 500; the concurrent case writes the same number per
//! writer / 4 x 16 writers).

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use tidesync::{Engine, RedbStore};
use tidesync_store_redb::DEFAULT_CACHE_SIZE;

use common::store_times::StoreTimes;
use common::{median, percentile, record, secs, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

/// The rows one raw commit writes, for what the rows alone cost (item 6 of the list above).
#[derive(Clone, Copy)]
enum RawRows {
    /// The record alone.
    One,
    /// The record and an outbox entry, in two tables.
    RecordAndEntry,
    /// The record and an outbox entry in the record's own table (under a separate key range).
    RecordAndEntryOneTable,
    /// What the table API wrote in storage layouts v2 and v3: record, entry and by-record
    /// index row (layout v4, today's, writes `RecordAndEntry`: the queue is in the record row).
    LayoutV3,
    /// What storage layout v1 wrote: record, entry, by-record and by-table index rows, and the
    /// sequence counter, clock and queue depth in a meta table.
    LayoutV1,
}

fn engine(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(RedbStore::open(dir.join("engine.redb")).expect("open"))
        .table(common::posts())
        .start()
        .expect("start")
}

fn raw_db(dir: &std::path::Path) -> Arc<Database> {
    Arc::new(
        Database::builder()
            .set_cache_size(DEFAULT_CACHE_SIZE)
            .create(dir.join("raw.redb"))
            .expect("create"),
    )
}

/// One durable raw commit of record `i` alone: the baseline.
fn raw_insert(db: &Database, i: usize) {
    raw_commit_rows(db, i, RawRows::One);
}

/// One durable raw commit of the rows `rows` stands for, for record `i`.
fn raw_commit_rows(db: &Database, i: usize, rows: RawRows) {
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    raw_insert_rows(&txn, i, rows);
    txn.commit().expect("commit");
}

/// Writes/s of `writers` × `per_writer` writes of the table API's rows, committed `writers` at a
/// time as one perfect group commit would: one commit per round, holding each writer's next
/// write (the keys of `api_concurrent`: writer w writes records w × per_writer + i).
fn raw_group_commits(writers: usize, per_writer: usize, rows: RawRows) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let start = Instant::now();
    for i in 0..per_writer {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        for w in 0..writers {
            raw_insert_rows(&txn, w * per_writer + i, rows);
        }
        txn.commit().expect("commit");
    }
    (writers * per_writer) as f64 / secs(start)
}

/// Inserts the rows `rows` stands for, for record `i`, in `txn`.
fn raw_insert_rows(txn: &redb::WriteTransaction, i: usize, rows: RawRows) {
    const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("o/entries");
    const BY_RECORD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("o/by_record");
    const BY_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("o/by_table");
    const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("m");
    let value = serde_json::to_vec(&record(i)).expect("json");
    let key = format!("rec-{i:08}");
    let seq = (i as u64 + 1).to_be_bytes();
    // An outbox entry carries the record plus ~150 bytes of bookkeeping.
    let entry = [value.as_slice(), &[b' '; 150]].concat();
    {
        let mut table = txn.open_table(RAW).expect("table");
        table
            .insert(key.as_bytes(), value.as_slice())
            .expect("insert");
    }
    if matches!(rows, RawRows::RecordAndEntryOneTable) {
        let entry_key = [b"~outbox/".as_slice(), &seq].concat();
        let mut table = txn.open_table(RAW).expect("table");
        table
            .insert(entry_key.as_slice(), entry.as_slice())
            .expect("insert");
    }
    if matches!(
        rows,
        RawRows::RecordAndEntry | RawRows::LayoutV3 | RawRows::LayoutV1
    ) {
        let mut entries = txn.open_table(ENTRIES).expect("table");
        entries.insert(&seq[..], entry.as_slice()).expect("insert");
    }
    if matches!(rows, RawRows::LayoutV3 | RawRows::LayoutV1) {
        let by_record = [b"posts\0".as_slice(), key.as_bytes(), &seq].concat();
        let mut t = txn.open_table(BY_RECORD).expect("table");
        t.insert(by_record.as_slice(), &[][..]).expect("insert");
    }
    if matches!(rows, RawRows::LayoutV1) {
        let by_table = [b"posts\0".as_slice(), &seq].concat();
        let mut t = txn.open_table(BY_TABLE).expect("table");
        t.insert(by_table.as_slice(), &[][..]).expect("insert");
        drop(t);
        let mut t = txn.open_table(META).expect("table");
        for name in [&b"next_seq"[..], b"hlc", b"depth/posts"] {
            t.insert(name, &seq[..]).expect("insert");
        }
    }
}

/// Writes/s of `n` sequential raw commits of `rows`.
fn raw_rows_sequential(n: usize, rows: RawRows) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let start = Instant::now();
    for i in 0..n {
        raw_commit_rows(&db, i, rows);
    }
    n as f64 / secs(start)
}

/// Writes/s, per-write latencies and CPU µs per write of `n` sequential durable writes through
/// the table API.
fn api_sequential(n: usize, rt: &tokio::runtime::Runtime) -> (f64, Vec<Duration>, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let mut latencies = Vec::with_capacity(n);
    let cpu = common::process_cpu();
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            let t = Instant::now();
            posts.put(&record(i)).await.expect("put");
            latencies.push(t.elapsed());
        }
    });
    let rate = n as f64 / secs(start);
    let cpu_us = common::cpu_us_per(cpu, common::process_cpu(), n);
    engine.shutdown();
    (rate, latencies, cpu_us)
}

/// Writes/s, per-commit latencies and CPU µs per write of `n` sequential raw redb commits.
fn raw_sequential(n: usize) -> (f64, Vec<Duration>, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let mut latencies = Vec::with_capacity(n);
    let cpu = common::process_cpu();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        raw_insert(&db, i);
        latencies.push(t.elapsed());
    }
    let rate = n as f64 / secs(start);
    (
        rate,
        latencies,
        common::cpu_us_per(cpu, common::process_cpu(), n),
    )
}

/// Writes/s and CPU µs per write of `writers` concurrent writers through the table API.
fn api_concurrent(writers: usize, per_writer: usize, rt: &tokio::runtime::Runtime) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let cpu = common::process_cpu();
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let posts = posts.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        posts.put(&record(w * per_writer + i)).await.expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
    });
    let rate = (writers * per_writer) as f64 / secs(start);
    let cpu_us = common::cpu_us_per(cpu, common::process_cpu(), writers * per_writer);
    engine.shutdown();
    (rate, cpu_us)
}

/// Writes/s and CPU µs per write of `writers` threads doing one raw commit per write.
fn raw_concurrent(writers: usize, per_writer: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let cpu = common::process_cpu();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let db = &db;
            scope.spawn(move || {
                for i in 0..per_writer {
                    raw_insert(db, w * per_writer + i);
                }
            });
        }
    });
    let rate = (writers * per_writer) as f64 / secs(start);
    let cpu_us = common::cpu_us_per(cpu, common::process_cpu(), writers * per_writer);
    (rate, cpu_us)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_WRITES", 500, 40);
    let rt = common::runtime();
    // Installed before any engine starts: what is recorded before is lost.
    StoreTimes::read();
    println!(
        "local_writes: records of {} bytes, Durability::Immediate, median of {runs} runs{}",
        record(0).to_string().len(),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );

    common::section(&format!("sequential durable writes ({n} per run)"));
    let (mut api, mut raw, mut ratio) = (vec![], vec![], vec![]);
    let (mut p50, mut p99, mut raw_p50, mut raw_p99) = (vec![], vec![], vec![], vec![]);
    let (mut api_cpu, mut raw_cpu) = (vec![], vec![]);
    let mut writer = Vec::new();
    for run in 0..runs {
        let before = StoreTimes::read();
        let ((a, mut lat, a_cpu), (r, mut raw_lat, r_cpu)) = if run % 2 == 0 {
            let a = api_sequential(n, &rt);
            (a, raw_sequential(n))
        } else {
            let r = raw_sequential(n);
            (api_sequential(n, &rt), r)
        };
        writer.push(StoreTimes::read().since(before));
        lat.sort();
        raw_lat.sort();
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
        api_cpu.push(a_cpu);
        raw_cpu.push(r_cpu);
        p50.push(ms(percentile(&lat, 50.0)));
        p99.push(ms(percentile(&lat, 99.0)));
        raw_p50.push(ms(percentile(&raw_lat, 50.0)));
        raw_p99.push(ms(percentile(&raw_lat, 99.0)));
    }
    println!(
        "  table API        {:>9} writes/s   {:>5.0} µs CPU per write",
        thousands(median(&api)),
        median(&api_cpu)
    );
    println!(
        "  raw redb         {:>9} writes/s   {:>5.0} µs CPU per write",
        thousands(median(&raw)),
        median(&raw_cpu)
    );
    println!(
        "  ratio            {:>9.2}   (target >= 0.8)",
        median(&ratio)
    );
    println!(
        "  latency p50      {:>9.3} ms   (raw redb commit {:.3} ms)",
        median(&p50),
        median(&raw_p50)
    );
    println!(
        "  latency p99      {:>9.3} ms   (raw redb commit {:.3} ms)",
        median(&p99),
        median(&raw_p99)
    );
    let per_write: Vec<[f64; 3]> = writer.iter().map(|t| t.us_per(n)).collect();
    let part = |i: usize| median(&per_write.iter().map(|p| p[i]).collect::<Vec<_>>());
    let whole = 1e6 / median(&api);
    println!(
        "  per write        {whole:>6.0} µs: on the writer thread, waiting {:.0} µs, work {:.0} µs, store commit {:.0} µs ({:.2} commits per write); the rest (the reply's hand-off, the caller) {:.0} µs",
        part(0),
        part(1),
        part(2),
        median(
            &writer
                .iter()
                .map(|t| t.commits / n as f64)
                .collect::<Vec<_>>()
        ),
        whole - part(0) - part(1) - part(2)
    );
    common::section_end();

    let writers = 16;
    let per_writer = (n / 4).max(1);
    common::section(&format!(
        "{writers} concurrent writers ({} records per run)",
        writers * per_writer
    ));
    let (mut api, mut raw, mut ratio) = (vec![], vec![], vec![]);
    let (mut api_cpu, mut raw_cpu) = (vec![], vec![]);
    let mut writer = Vec::new();
    for run in 0..runs {
        let before = StoreTimes::read();
        let ((a, a_cpu), (r, r_cpu)) = if run % 2 == 0 {
            let a = api_concurrent(writers, per_writer, &rt);
            (a, raw_concurrent(writers, per_writer))
        } else {
            let r = raw_concurrent(writers, per_writer);
            (api_concurrent(writers, per_writer, &rt), r)
        };
        writer.push(StoreTimes::read().since(before));
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
        api_cpu.push(a_cpu);
        raw_cpu.push(r_cpu);
    }
    println!(
        "  table API, group commit     {:>9} writes/s   {:>5.0} µs CPU per write",
        thousands(median(&api)),
        median(&api_cpu)
    );
    println!(
        "  raw redb, commit per write  {:>9} writes/s   {:>5.0} µs CPU per write",
        thousands(median(&raw)),
        median(&raw_cpu)
    );
    println!(
        "  ratio                       {:>9.1}x  (target >= 10x)",
        median(&ratio)
    );
    let total = writers * per_writer;
    let per_commit: Vec<[f64; 3]> = writer
        .iter()
        .map(|t| t.us_per(t.commits.max(1.0) as usize))
        .collect();
    let part = |i: usize| median(&per_commit.iter().map(|p| p[i]).collect::<Vec<_>>());
    println!(
        "  store writer: {:.1} writes per commit; per commit, waiting {:.0} µs, work {:.0} µs, store commit {:.0} µs",
        median(
            &writer
                .iter()
                .map(|t| total as f64 / t.commits.max(1.0))
                .collect::<Vec<_>>()
        ),
        part(0),
        part(1),
        part(2)
    );
    // What bounds any group commit of these writes: the same rows, each commit holding every
    // writer's next write, with no engine at all; and what fewer rows per write would allow.
    for (rows, label) in [
        (RawRows::LayoutV3, "layout v3's 3 rows"),
        (
            RawRows::RecordAndEntry,
            "record + entry, 2 rows (the table API's, layout v4)",
        ),
        (RawRows::One, "one row (the record)"),
    ] {
        let floor: Vec<f64> = (0..runs)
            .map(|_| raw_group_commits(writers, per_writer, rows))
            .collect();
        println!(
            "  raw redb, {label}, {writers} writes per commit {:>9} writes/s = {:.1}x a commit per write; the table API reaches {:.2} of it",
            thousands(median(&floor)),
            median(&floor) / median(&raw),
            median(&api) / median(&floor)
        );
    }
    common::section_end();

    common::section(&format!(
        "what the rows alone cost: raw redb, one durable commit per write ({n} per run)"
    ));
    let layouts = [
        (RawRows::One, "one row (the record)"),
        (
            RawRows::RecordAndEntryOneTable,
            "record + outbox entry, 1 table",
        ),
        (
            RawRows::RecordAndEntry,
            "record + outbox entry, 2 tables (layout v4)",
        ),
        (RawRows::LayoutV3, "layout v3's 3 rows, 3 tables"),
        (RawRows::LayoutV1, "layout v1's 7 rows, 5 tables"),
    ];
    let mut rates: Vec<Vec<f64>> = vec![vec![]; layouts.len()];
    let mut ratios: Vec<Vec<f64>> = vec![vec![]; layouts.len()];
    for run in 0..runs {
        let mut this_run = vec![0.0; layouts.len()];
        // Rotate the order between runs so drift in the machine's load hits each layout.
        for k in 0..layouts.len() {
            let index = (k + run) % layouts.len();
            this_run[index] = raw_rows_sequential(n, layouts[index].0);
        }
        for (index, rate) in this_run.iter().enumerate() {
            rates[index].push(*rate);
            ratios[index].push(rate / this_run[0]);
        }
    }
    for (index, (_, label)) in layouts.iter().enumerate() {
        println!(
            "  {label:<36} {:>9} writes/s   {:>5.2} of one row",
            thousands(median(&rates[index])),
            median(&ratios[index])
        );
    }
    common::section_end();
}
