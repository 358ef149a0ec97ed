//! Columnar blocks of records: the unit the runtime gathers, ships between
//! servers and hands to an evaluator. Per field a values buffer and a NULL
//! bitmap (bit set = NULL; text as offsets + UTF-8 bytes), plus the key of
//! every record as text.
//!
//! Invariant: every `Block` value is valid — column lengths agree, text
//! offsets are monotone, in bounds and on character boundaries, booleans
//! are 0 or 1, no float is NaN (NaN is NULL, as in SQLite). The builder
//! keeps it so and deserialization checks it, so the JIT can read a block
//! without a bounds check per record and never reads out of bounds.

use crate::types::Type;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The number of records a block holds unless the runtime says otherwise.
pub const DEFAULT_BLOCK_RECORDS: usize = 1024;
/// The most records one block may hold (offsets and indices stay in `u32`).
pub const MAX_BLOCK_RECORDS: usize = 1 << 24;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BlockData")]
pub struct Block {
    len: usize,
    keys: Text,
    columns: Vec<Column>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Bit `i % 64` of word `i / 64` is set when record `i` is NULL.
    nulls: Vec<u64>,
    values: Values,
}

/// The values of one column; a NULL slot holds zero (empty text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Values {
    Int(Vec<i64>),
    Float(Vec<f64>),
    /// 0 or 1 per record.
    Bool(Vec<u8>),
    Text(Text),
    Timestamp(Vec<i64>),
    Duration(Vec<i64>),
}

/// Texts as one UTF-8 buffer and `len + 1` offsets into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Text {
    offsets: Vec<u32>,
    bytes: Vec<u8>,
}

/// Why a block could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockError(pub String);

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BlockError {}

fn error<T>(message: impl Into<String>) -> Result<T, BlockError> {
    Err(BlockError(message.into()))
}

fn bitmap_words(len: usize) -> usize {
    len.div_ceil(64)
}

impl Text {
    fn new() -> Text {
        Text {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> Result<(), BlockError> {
        self.bytes.extend_from_slice(s.as_bytes());
        match u32::try_from(self.bytes.len()) {
            Ok(end) => {
                self.offsets.push(end);
                Ok(())
            }
            Err(_) => error("a block's text column is over 4 GiB; use smaller blocks"),
        }
    }

    /// Whether `s` still fits under the `u32` offsets.
    fn has_room(&self, s: &str) -> bool {
        self.bytes.len() + s.len() <= u32::MAX as usize
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &str {
        let (start, end) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        // Valid by the block invariant; checked again here at no real cost
        // so that a broken invariant is a panic, never undefined behaviour.
        std::str::from_utf8(&self.bytes[start..end]).expect("block text is UTF-8")
    }

    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn validate(&self, len: usize, what: &str) -> Result<(), BlockError> {
        if self.offsets.len() != len + 1 {
            return error(format!(
                "{what}: {} text offsets for {len} records (expected {})",
                self.offsets.len(),
                len + 1
            ));
        }
        if self.offsets[0] != 0 || self.offsets[len] as usize != self.bytes.len() {
            return error(format!(
                "{what}: text offsets must run from 0 to the byte length"
            ));
        }
        let Ok(text) = std::str::from_utf8(&self.bytes) else {
            return error(format!("{what}: text is not valid UTF-8"));
        };
        for pair in self.offsets.windows(2) {
            if pair[0] > pair[1] || !text.is_char_boundary(pair[1] as usize) {
                return error(format!(
                    "{what}: text offsets must grow and fall on character boundaries"
                ));
            }
        }
        Ok(())
    }
}

impl Values {
    fn new(ty: Type) -> Values {
        match ty {
            Type::Int => Values::Int(Vec::new()),
            Type::Float => Values::Float(Vec::new()),
            Type::Bool => Values::Bool(Vec::new()),
            Type::Text => Values::Text(Text::new()),
            Type::Timestamp => Values::Timestamp(Vec::new()),
            Type::Duration => Values::Duration(Vec::new()),
        }
    }

    pub fn ty(&self) -> Type {
        match self {
            Values::Int(_) => Type::Int,
            Values::Float(_) => Type::Float,
            Values::Bool(_) => Type::Bool,
            Values::Text(_) => Type::Text,
            Values::Timestamp(_) => Type::Timestamp,
            Values::Duration(_) => Type::Duration,
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Int(v) | Values::Timestamp(v) | Values::Duration(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Text(t) => t.len(),
        }
    }
}

impl Column {
    pub fn ty(&self) -> Type {
        self.values.ty()
    }

    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn nulls(&self) -> &[u64] {
        &self.nulls
    }

    pub fn is_null(&self, i: usize) -> bool {
        self.nulls[i / 64] >> (i % 64) & 1 == 1
    }

    /// The value of record `i`.
    pub fn get(&self, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match &self.values {
            Values::Int(v) => Value::Int(v[i]),
            Values::Float(v) => Value::Float(v[i]),
            Values::Bool(v) => Value::Bool(v[i] != 0),
            Values::Text(t) => Value::Text(t.get(i).to_string()),
            Values::Timestamp(v) => Value::Timestamp(v[i]),
            Values::Duration(v) => Value::Duration(v[i]),
        }
    }

    fn push(&mut self, index: usize, value: &Value) -> Result<(), BlockError> {
        if index.is_multiple_of(64) {
            self.nulls.push(0);
        }
        let null = matches!(value, Value::Null) || matches!(value, Value::Float(x) if x.is_nan());
        if null {
            self.nulls[index / 64] |= 1 << (index % 64);
        }
        match (&mut self.values, value) {
            (Values::Int(v), Value::Int(x))
            | (Values::Timestamp(v), Value::Timestamp(x))
            | (Values::Duration(v), Value::Duration(x)) => v.push(*x),
            (Values::Float(v), Value::Float(x)) => v.push(if null { 0.0 } else { *x }),
            (Values::Bool(v), Value::Bool(x)) => v.push(u8::from(*x)),
            (Values::Text(t), Value::Text(x)) => t.push(x)?,
            (Values::Int(v) | Values::Timestamp(v) | Values::Duration(v), Value::Null) => v.push(0),
            (Values::Float(v), Value::Null) => v.push(0.0),
            (Values::Bool(v), Value::Null) => v.push(0),
            (Values::Text(t), Value::Null) => t.push("")?,
            (values, value) => {
                return error(format!(
                    "a {} column cannot hold the value {value}",
                    values.ty()
                ))
            }
        }
        Ok(())
    }

    fn validate(&self, len: usize, index: usize) -> Result<(), BlockError> {
        let what = format!("column {index}");
        if self.values.len() != len {
            return error(format!(
                "{what}: {} values for {len} records",
                self.values.len()
            ));
        }
        if self.nulls.len() != bitmap_words(len) {
            return error(format!(
                "{what}: NULL bitmap of {} words for {len} records",
                self.nulls.len()
            ));
        }
        if !len.is_multiple_of(64) && self.nulls[len / 64] >> (len % 64) != 0 {
            return error(format!("{what}: NULL bits set past the last record"));
        }
        match &self.values {
            Values::Bool(v) if v.iter().any(|&b| b > 1) => {
                error(format!("{what}: a boolean must be 0 or 1"))
            }
            Values::Float(v)
                if v.iter()
                    .enumerate()
                    .any(|(i, x)| x.is_nan() && !self.is_null(i)) =>
            {
                error(format!("{what}: NaN must be sent as NULL"))
            }
            Values::Text(t) => t.validate(len, &what),
            _ => Ok(()),
        }
    }
}

impl Block {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn types(&self) -> Vec<Type> {
        self.columns.iter().map(Column::ty).collect()
    }

    /// The key of record `i`, as text.
    pub fn key(&self, i: usize) -> &str {
        self.keys.get(i)
    }

    /// Record `i` as values, one per field (what the interpreter reads).
    pub fn record(&self, i: usize) -> Vec<Value> {
        self.columns.iter().map(|c| c.get(i)).collect()
    }
}

/// A key value as the text a block (and the runtime's state) keeps: text
/// as it is, anything else as the language writes it; `None` for NULL.
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The serialized form, checked before it becomes a `Block`.
#[derive(Deserialize)]
struct BlockData {
    len: usize,
    keys: Text,
    columns: Vec<Column>,
}

impl TryFrom<BlockData> for Block {
    type Error = BlockError;

    fn try_from(data: BlockData) -> Result<Block, BlockError> {
        if data.len > MAX_BLOCK_RECORDS {
            return error(format!(
                "a block of {} records is over the limit of {MAX_BLOCK_RECORDS}",
                data.len
            ));
        }
        data.keys.validate(data.len, "keys")?;
        for (index, column) in data.columns.iter().enumerate() {
            column.validate(data.len, index)?;
        }
        Ok(Block {
            len: data.len,
            keys: data.keys,
            columns: data.columns,
        })
    }
}

/// Builds a block record by record, checking every value against its
/// column's type.
pub struct BlockBuilder {
    block: Block,
}

impl BlockBuilder {
    pub fn new(types: &[Type]) -> BlockBuilder {
        let columns = types
            .iter()
            .map(|&ty| Column {
                nulls: Vec::new(),
                values: Values::new(ty),
            })
            .collect();
        BlockBuilder {
            block: Block {
                len: 0,
                keys: Text::new(),
                columns,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.block.len
    }

    pub fn is_empty(&self) -> bool {
        self.block.len == 0
    }

    /// Appends one record. On error the builder is unchanged.
    pub fn push(&mut self, key: &str, record: &[Value]) -> Result<(), BlockError> {
        let block = &mut self.block;
        if record.len() != block.columns.len() {
            return error(format!(
                "a record of {} values for a block of {} columns",
                record.len(),
                block.columns.len()
            ));
        }
        if block.len == MAX_BLOCK_RECORDS {
            return error(format!("a block holds at most {MAX_BLOCK_RECORDS} records"));
        }
        // Everything that can fail is checked before anything changes, so
        // that an error leaves the builder as it was.
        let mut room = block.keys.has_room(key);
        for (column, value) in block.columns.iter().zip(record) {
            let fits = match value {
                Value::Null => true,
                v => v.ty() == Some(column.ty()),
            };
            if !fits {
                return error(format!(
                    "a {} column cannot hold the value {value}",
                    column.ty()
                ));
            }
            if let (Values::Text(t), Value::Text(s)) = (&column.values, value) {
                room &= t.has_room(s);
            }
        }
        if !room {
            return error("a block's text column is over 4 GiB; use smaller blocks");
        }
        let index = block.len;
        block.keys.push(key)?;
        for (column, value) in block.columns.iter_mut().zip(record) {
            column.push(index, value)?;
        }
        block.len += 1;
        Ok(())
    }

    pub fn finish(self) -> Block {
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Block {
        let mut b = BlockBuilder::new(&[Type::Int, Type::Text, Type::Float, Type::Bool]);
        for i in 0..70 {
            let record = if i % 3 == 0 {
                vec![
                    Value::Null,
                    Value::Null,
                    Value::Float(f64::NAN),
                    Value::Null,
                ]
            } else {
                vec![
                    Value::Int(i),
                    Value::Text(format!("é{i}")),
                    Value::Float(i as f64 / 2.0),
                    Value::Bool(i % 2 == 0),
                ]
            };
            b.push(&format!("k{i}"), &record).unwrap();
        }
        b.finish()
    }

    #[test]
    fn records_round_trip_through_the_columns() {
        let block = sample();
        assert_eq!(block.len(), 70);
        assert_eq!(block.key(69), "k69");
        assert_eq!(block.record(0), vec![Value::Null; 4]);
        assert_eq!(
            block.record(68),
            vec![
                Value::Int(68),
                Value::Text("é68".into()),
                Value::Float(34.0),
                Value::Bool(true)
            ]
        );
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let block = sample();
        let json = serde_json::to_string(&block).unwrap();
        let back: Block = serde_json::from_str(&json).unwrap();
        assert_eq!(back, block);

        let mut broken: serde_json::Value = serde_json::from_str(&json).unwrap();
        broken["columns"][1]["values"]["text"]["offsets"][3] = 9999.into();
        let err = serde_json::from_value::<Block>(broken).unwrap_err();
        assert!(err.to_string().contains("column 1"), "{err}");

        let mut broken: serde_json::Value = serde_json::from_str(&json).unwrap();
        broken["len"] = 71.into();
        assert!(serde_json::from_value::<Block>(broken).is_err());

        let mut broken: serde_json::Value = serde_json::from_str(&json).unwrap();
        broken["columns"][3]["values"]["bool"][1] = 7.into();
        let err = serde_json::from_value::<Block>(broken).unwrap_err();
        assert!(err.to_string().contains("0 or 1"), "{err}");
    }

    #[test]
    fn a_wrong_value_leaves_the_builder_unchanged() {
        let mut b = BlockBuilder::new(&[Type::Int, Type::Text]);
        b.push("a", &[Value::Int(1), Value::Text("x".into())])
            .unwrap();
        let err = b.push("b", &[Value::Int(2), Value::Int(3)]).unwrap_err();
        assert!(err.0.contains("text column"), "{err}");
        assert!(b.push("c", &[Value::Int(2)]).is_err());
        let block = b.finish();
        assert_eq!(block.len(), 1);
        assert_eq!(block.columns()[0].nulls().len(), 1);
    }
}
