//! Records from the server in an older or newer shape (DESIGN invariant 13): before a pulled
//! record, or the record a push answer carries, is stored, it goes through
//!
//! 1. the table's decoder, when one is registered (`EngineBuilder::from_remote`): any shape
//!    change that is not a version step (renamed wire fields, an envelope, a version to infer
//!    from the shape);
//! 2. when the table names a `remote_version_field`, the version steps: a record below the
//!    table's version runs the same migrations the stored records ran at open, from its own
//!    version (a missing field means `remote_default_version`, by default the table's
//!    version); the field is then set to the table's version. A record *above* the table's
//!    version was written by a newer app version: it is quarantined with that reason (and can
//!    be retried once the app is upgraded), or stored as it is with `accept_newer_remote`.
//!
//! A record the decoder or a step refuses is quarantined with the reason; the rest of the
//! page goes on. Tables with neither a decoder nor a version field skip all of this (no copy).
//! Decoders must be idempotent: a quarantined item that is retried goes through them again.

use std::borrow::Cow;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{Key, Record};
use crate::spec::{TableSpec, describe};
use crate::store::WriteTxn;

use super::{AppliedPage, MigrationFn, RemoteChanges};

impl RemoteChanges<'_> {
    /// Brings `record`, as the server sent it for `spec`'s table, to the shape this version
    /// of the app stores (see the module docs). `Ok(None)`: the record is taken as it is.
    /// The error (kind `Decode`) names the table, the key when the record has one, and the
    /// field.
    pub(super) fn decode_remote(
        &self,
        spec: &TableSpec,
        record: &Record,
    ) -> Result<Option<Record>> {
        let decoder = self.db.migrations.decoder(&spec.name);
        if decoder.is_none() && spec.remote_version_field.is_none() {
            return Ok(None);
        }
        let key = spec.remote_key_of(record).ok().flatten();
        let refused = |why: String, field: Option<&str>| {
            let mut err = Error::new(ErrorKind::Decode, why).table(spec.name.clone());
            if let Some(key) = &key {
                err = err.key(key);
            }
            match field {
                Some(field) => err.field(field),
                None => err,
            }
        };
        let mut current = record.clone();
        if let Some(decoder) = decoder {
            current = run(decoder, current)
                .map_err(|why| refused(format!("the table's from_remote decoder: {why}"), None))?;
        }
        if let Some(field) = &spec.remote_version_field {
            current = self.version_steps(spec, current, field, &refused)?;
        }
        let after = spec.remote_key_of(&current).ok().flatten();
        if after != key {
            return Err(refused(
                "decoding changed or removed the record's key".to_owned(),
                Some(&spec.key),
            ));
        }
        Ok(Some(current))
    }

    /// The version steps of `spec` from the version `current` carries in `field`.
    fn version_steps(
        &self,
        spec: &TableSpec,
        mut current: Record,
        field: &str,
        refused: &dyn Fn(String, Option<&str>) -> Error,
    ) -> Result<Record> {
        let version = match current.get(field) {
            None | Some(Value::Null) => spec.remote_default_version.unwrap_or(spec.version),
            Some(value) => value
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    refused(
                        format!(
                            "the version field holds {} {value}, not a version number",
                            describe(value)
                        ),
                        Some(field),
                    )
                })?,
        };
        if version > spec.version {
            if spec.accept_newer_remote {
                return Ok(current);
            }
            return Err(refused(
                format!(
                    "written by a newer app version: the record has shape version {version}, \
                     this app knows up to version {}; upgrade the app and retry the \
                     quarantined item (or set accept_newer_remote to store such records as \
                     they are)",
                    spec.version
                ),
                Some(field),
            ));
        }
        for to_version in version + 1..=spec.version {
            let step = self
                .db
                .migrations
                .step(&spec.name, to_version)
                .ok_or_else(|| {
                    refused(
                        format!(
                            "the record has shape version {version} and no migration to version \
                         {to_version} is registered (EngineBuilder::migration)"
                        ),
                        Some(field),
                    )
                })?;
            current = run(step, current).map_err(|why| {
                refused(
                    format!("migration to version {to_version} failed: {why}"),
                    None,
                )
            })?;
        }
        if version < spec.version && current.contains_key(field) {
            current.insert(field.to_owned(), Value::from(spec.version));
        }
        Ok(current)
    }

    /// `decode_remote` by table name, for a record the server sent outside a page
    /// (a conflict's current version).
    pub fn decode_remote_record(&self, table: &str, record: Record) -> Result<Record> {
        let spec = self.db.schema.table(table)?;
        Ok(self.decode_remote(spec, &record)?.unwrap_or(record))
    }

    /// A pulled record, decoded; `None` when it was refused and quarantined (with the record
    /// as the server sent it, so a retry after an upgrade decodes it again).
    pub(super) fn decode_pulled<'p>(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        remote: Cow<'p, Record>,
        applied: &mut AppliedPage,
    ) -> Result<Option<Cow<'p, Record>>> {
        match self.decode_remote(spec, &remote) {
            Ok(None) => Ok(Some(remote)),
            Ok(Some(decoded)) => Ok(Some(Cow::Owned(decoded))),
            Err(err) => {
                let key = spec.remote_key_of(&remote).ok().flatten();
                self.db.parked().quarantine(
                    txn,
                    &spec.name,
                    key.as_ref(),
                    Some(&remote),
                    &err,
                    applied,
                )?;
                Ok(None)
            }
        }
    }

    /// The record a push answer carries, decoded; `None` when there is none, or when it was
    /// refused: then it is quarantined (the push itself stays acknowledged: the server
    /// accepted what was sent) and the acknowledgement goes on as if the answer had no body.
    pub(super) fn decode_answer(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        record: Option<Record>,
    ) -> Result<Option<Record>> {
        let Some(record) = record else {
            return Ok(None);
        };
        match self.decode_remote(spec, &record) {
            Ok(None) => Ok(Some(record)),
            Ok(Some(decoded)) => Ok(Some(decoded)),
            Err(err) => {
                let mut sink = AppliedPage::default();
                self.db.parked().quarantine(
                    txn,
                    &spec.name,
                    Some(key),
                    Some(&record),
                    &err,
                    &mut sink,
                )?;
                Ok(None)
            }
        }
    }
}

fn run(step: &MigrationFn, record: Record) -> std::result::Result<Record, String> {
    match step(Value::Object(record))? {
        Value::Object(record) => Ok(record),
        other => Err(format!(
            "it returned {}, not a JSON object",
            describe(&other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::hlc::HybridClock;
    use crate::local::{LocalDb, Migrations, Schema};

    fn db(spec: TableSpec, migrations: Migrations) -> LocalDb {
        LocalDb::new(
            Schema::new([spec]).expect("schema"),
            Arc::new(HybridClock::new()),
        )
        .with_migrations(migrations)
    }

    fn rec(v: Value) -> Record {
        v.as_object().expect("object").clone()
    }

    fn adds(field: &'static str) -> MigrationFn {
        Arc::new(move |mut v: Value| {
            v[field] = json!(true);
            Ok(v)
        })
    }

    #[test]
    fn a_table_without_decoder_or_version_field_takes_records_as_they_are() {
        let db = db(TableSpec::new("t").version(3), Migrations::default());
        let spec = db.schema().table("t").unwrap().clone();
        assert_eq!(
            db.remote()
                .decode_remote(&spec, &rec(json!({"id": "a"})))
                .unwrap(),
            None
        );
    }

    #[test]
    fn steps_run_from_the_record_version_and_errors_name_table_key_and_field() {
        let mut migrations = Migrations::default();
        migrations.add("t", 2, adds("two"));
        let spec = TableSpec::new("t")
            .version(2)
            .remote_version_field("v")
            .remote_default_version(1);
        let db = db(spec, migrations);
        let spec = db.schema().table("t").unwrap().clone();
        // Missing field: the configured default (1), so step 2 runs; the field stays absent.
        let out = db
            .remote()
            .decode_remote(&spec, &rec(json!({"id": "a"})))
            .unwrap()
            .unwrap();
        assert_eq!(Value::Object(out), json!({"id": "a", "two": true}));
        // Version 0 needs step 1, which is not registered.
        let err = db
            .remote()
            .decode_remote(&spec, &rec(json!({"id": "b", "v": 0})))
            .unwrap_err();
        assert!(
            err.to_string().contains("no migration to version 1"),
            "{err}"
        );
        assert_eq!(err.field_name(), Some("v"));
        // Not a version number.
        let err = db
            .remote()
            .decode_remote(&spec, &rec(json!({"id": "c", "v": "2"})))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not a version number")
                && text.contains("table `t`")
                && text.contains("key `c`"),
            "{text}"
        );
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[test]
    fn a_decoder_that_changes_the_key_or_returns_no_object_is_refused() {
        let mut migrations = Migrations::default();
        migrations.add_decoder(
            "t",
            Arc::new(|v: Value| match v["id"].as_str() {
                Some("moved") => Ok(json!({"id": "elsewhere"})),
                Some("list") => Ok(json!([1])),
                _ => Ok(v),
            }),
        );
        let db = db(TableSpec::new("t"), migrations);
        let spec = db.schema().table("t").unwrap().clone();
        let err = db
            .remote()
            .decode_remote(&spec, &rec(json!({"id": "moved"})))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("changed or removed the record's key"),
            "{err}"
        );
        let err = db
            .remote()
            .decode_remote(&spec, &rec(json!({"id": "list"})))
            .unwrap_err();
        assert!(
            err.to_string().contains("an array, not a JSON object"),
            "{err}"
        );
        assert_eq!(
            db.remote()
                .decode_remote(&spec, &rec(json!({"id": "same"})))
                .unwrap(),
            Some(rec(json!({"id": "same"})))
        );
    }
}
