//! Compiled fast path of the nodemeter SDK: validation + Avro single-object
//! encoding of a `UsageEvent` or `RequestEnd` in one call, plus the Kafka key.
//!
//! The Python side (`nodemeter.fastcodec`) stays the reference. This module only
//! takes the *plain* case: the exact classes, exact `str`/`int`/`dict` values,
//! an aware datetime with a `datetime.timezone`, values inside every limit. For
//! anything else (invalid input, subclasses, unusual types) it calls the Python
//! implementation it was configured with, which raises the SDK's typed errors
//! with their usual messages, or encodes the odd-but-valid record. So:
//!
//! - a record accepted here is one the Python validator accepts, and the bytes
//!   are the ones the Python encoder writes (checked by property tests);
//! - a record refused here behaves exactly as on the pure-Python path.
//!
//! Fields are read straight from the dataclasses' `__slots__` (offsets taken
//! from their member descriptors at `configure`, the exact class checked on
//! every call): no attribute lookups, no Python code runs on the fast path.
//!
//! The decoder (`decode_*`, set up by `configure_decoder`) is the reverse for the
//! stream worker: single-object usage_event v1/v2 bytes straight into a new
//! `UsageEvent` (slots filled directly), optionally validated on the way; anything
//! unusual gets None, and the Python decoder (`codec.decode_record`) has the say.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};

const USAGE_FIELDS: [&str; 19] = [
    "event_id",
    "tenant",
    "request_id",
    "node_id",
    "span_id",
    "parent_span_id",
    "branch_path",
    "workflow",
    "model",
    "provider",
    "sequence",
    "meters",
    "status",
    "billable",
    "non_billable_reason",
    "event_time",
    "trace_id",
    "producer",
    "attributes",
];
const METER_FIELDS: [&str; 10] = [
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "gpu_ms",
    "gpu_type",
    "gpu_source",
    "cpu_ms",
    "api_calls",
    "custom",
];
const END_FIELDS: [&str; 9] = [
    "event_id",
    "tenant",
    "request_id",
    "workflow",
    "root_span_id",
    "span_count",
    "status",
    "event_time",
    "attributes",
];
/// The quantities among METER_FIELDS (indices), validated against their limits.
const QUANTITIES: [usize; 7] = [0, 1, 2, 3, 4, 7, 8];
/// The patterns the hand-written checks below implement; `configure` refuses others.
/// Anchored with \A and \Z: the whole string, so "acme\n" is refused (as in Python).
const TENANT_PATTERN: &str = "\\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\\Z";
const CUSTOM_PATTERN: &str = "\\A[a-z][a-z0-9_.]{0,63}\\Z";
const MAX_SPAN_COUNT: i64 = 1_000_000;
const T_OBJECT_EX: c_int = 16; // Py_T_OBJECT_EX: a slot that raises AttributeError when unset

struct Config {
    usage_type: *mut ffi::PyTypeObject,
    meters_type: *mut ffi::PyTypeObject,
    end_type: *mut ffi::PyTypeObject,
    timezone_type: *mut ffi::PyTypeObject,
    usage: [isize; 19],
    meters: [isize; 10],
    end: [isize; 9],
    status: Vec<*mut ffi::PyObject>,
    gpu: Vec<*mut ffi::PyObject>,
    gpu_none: *mut ffi::PyObject,
    usage_head: Vec<u8>,
    end_head: Vec<u8>,
    limits: [i64; 10], // indexed like METER_FIELDS (non-quantities unused)
    custom_limit: i64,
    max_id_len: isize,
    max_attributes: isize,
    max_attribute_len: isize,
    max_custom: isize,
    slow_validated: Py<PyAny>,
    slow_plain: Py<PyAny>,
    _keep: Vec<Py<PyAny>>, // classes and enum members stay alive as long as the config
}

// Only touched with the GIL held.
unsafe impl Send for Config {}
unsafe impl Sync for Config {}

static CONFIG: AtomicPtr<Config> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

// --- configuration -------------------------------------------------------------------

/// Slot offsets of `names` in `cls`, in that order (each a plain object slot of cls).
fn slot_offsets<const N: usize>(
    cls: &Bound<'_, PyType>,
    names: &[&str; N],
) -> PyResult<[isize; N]> {
    let mut out = [0isize; N];
    let dict = cls.getattr("__dict__")?;
    let basicsize = unsafe { (*cls.as_type_ptr()).tp_basicsize };
    for (i, name) in names.iter().enumerate() {
        let descr = dict.get_item(name).map_err(|_| {
            PyValueError::new_err(format!("{}: no slot named {name}", cls.name().unwrap()))
        })?;
        unsafe {
            let p = descr.as_ptr();
            if ffi::Py_TYPE(p) != ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                return Err(PyValueError::new_err(format!(
                    "{name} is not a __slots__ member"
                )));
            }
            let d = p as *mut ffi::PyMemberDescrObject;
            if (*d).d_common.d_type != cls.as_type_ptr() {
                return Err(PyValueError::new_err(format!(
                    "{name} belongs to another class"
                )));
            }
            let member = (*d).d_member as *mut ffi::PyMemberDef;
            if (*member).type_code != T_OBJECT_EX
                || (*member).offset <= 0
                || (*member).offset + (std::mem::size_of::<*mut ffi::PyObject>() as isize)
                    > basicsize
            {
                return Err(PyValueError::new_err(format!(
                    "{name} is not an object slot"
                )));
            }
            out[i] = (*member).offset;
        }
    }
    Ok(out)
}

fn check_fields(what: &str, given: &Bound<'_, PyTuple>, expected: &[&str]) -> PyResult<()> {
    let given: Vec<String> = given.extract()?;
    if given != expected {
        return Err(PyValueError::new_err(format!(
            "{what} fields {given:?} differ from the compiled encoder's {expected:?}"
        )));
    }
    Ok(())
}

fn members(seq: &Bound<'_, PyAny>, keep: &mut Vec<Py<PyAny>>) -> PyResult<Vec<*mut ffi::PyObject>> {
    let mut out = Vec::new();
    for m in seq.try_iter()? {
        let m = m?;
        out.push(m.as_ptr());
        keep.push(m.unbind());
    }
    if out.is_empty() || out.len() > 63 {
        return Err(PyValueError::new_err("an enum needs 1-63 symbols"));
    }
    Ok(out)
}

/// Set up the encoder; called once by ``nodemeter.fastcodec`` (again: replaces it).
///
/// Refuses (ValueError) when the classes, field lists or validation patterns are
/// not the ones this build implements; the SDK then keeps the pure-Python path.
#[pyfunction]
#[pyo3(signature = (
    *, usage_event, meters, request_end, status, gpu_source, usage_head, end_head,
    usage_fields, meter_fields, end_fields, limits, max_id_len, max_attributes,
    max_attribute_len, max_custom_meters, tenant_pattern, custom_pattern,
    slow_validated, slow_plain,
))]
#[allow(clippy::too_many_arguments)]
fn configure(
    py: Python<'_>,
    usage_event: &Bound<'_, PyType>,
    meters: &Bound<'_, PyType>,
    request_end: &Bound<'_, PyType>,
    status: &Bound<'_, PyAny>,
    gpu_source: &Bound<'_, PyAny>,
    usage_head: Vec<u8>,
    end_head: Vec<u8>,
    usage_fields: &Bound<'_, PyTuple>,
    meter_fields: &Bound<'_, PyTuple>,
    end_fields: &Bound<'_, PyTuple>,
    limits: &Bound<'_, PyDict>,
    max_id_len: isize,
    max_attributes: isize,
    max_attribute_len: isize,
    max_custom_meters: isize,
    tenant_pattern: &str,
    custom_pattern: &str,
    slow_validated: Py<PyAny>,
    slow_plain: Py<PyAny>,
) -> PyResult<()> {
    check_fields("usage_event", usage_fields, &USAGE_FIELDS)?;
    check_fields("meters", meter_fields, &METER_FIELDS)?;
    check_fields("request_end", end_fields, &END_FIELDS)?;
    if tenant_pattern != TENANT_PATTERN || custom_pattern != CUSTOM_PATTERN {
        return Err(PyValueError::new_err(
            "validation patterns differ from the compiled ones",
        ));
    }
    if usage_head.len() != 10 || end_head.len() != 10 || usage_head[..2] != [0xc3, 0x01] {
        return Err(PyValueError::new_err(
            "heads must be C3 01 + an 8-byte fingerprint",
        ));
    }
    let mut keep: Vec<Py<PyAny>> = Vec::new();
    let status = members(status, &mut keep)?;
    let gpu = members(gpu_source, &mut keep)?;
    let first_gpu: String = gpu_source.get_item(0)?.getattr("value")?.extract()?;
    if first_gpu != "NONE" {
        return Err(PyValueError::new_err("gpu_source must list NONE first"));
    }
    let mut lim = [0i64; 10];
    for &i in QUANTITIES.iter() {
        lim[i] = limits
            .get_item(METER_FIELDS[i])?
            .ok_or_else(|| PyValueError::new_err(format!("no limit for {}", METER_FIELDS[i])))?
            .extract()?;
    }
    let custom_limit: i64 = limits
        .get_item("custom")?
        .ok_or_else(|| PyValueError::new_err("no limit for custom meters"))?
        .extract()?;
    let timezone = py
        .import("datetime")?
        .getattr("timezone")?
        .cast_into::<PyType>()?;
    unsafe {
        ffi::PyDateTime_IMPORT();
        if ffi::PyDateTimeAPI().is_null() {
            return Err(PyRuntimeError::new_err("datetime C API unavailable"));
        }
    }
    let cfg = Config {
        usage_type: usage_event.as_type_ptr(),
        meters_type: meters.as_type_ptr(),
        end_type: request_end.as_type_ptr(),
        timezone_type: timezone.as_type_ptr(),
        usage: slot_offsets(usage_event, &USAGE_FIELDS)?,
        meters: slot_offsets(meters, &METER_FIELDS)?,
        end: slot_offsets(request_end, &END_FIELDS)?,
        gpu_none: gpu[0],
        status,
        gpu,
        usage_head,
        end_head,
        limits: lim,
        custom_limit,
        max_id_len,
        max_attributes,
        max_attribute_len,
        max_custom: max_custom_meters,
        slow_validated,
        slow_plain,
        _keep: {
            keep.push(usage_event.clone().into_any().unbind());
            keep.push(meters.clone().into_any().unbind());
            keep.push(request_end.clone().into_any().unbind());
            keep.push(timezone.into_any().unbind());
            keep
        },
    };
    // The old config (if any) is leaked on purpose: a caller may still hold pointers
    // from it in this call chain; configure runs once or twice per process.
    CONFIG.store(Box::into_raw(Box::new(cfg)), Ordering::Release);
    Ok(())
}

fn config() -> PyResult<&'static Config> {
    let p = CONFIG.load(Ordering::Acquire);
    if p.is_null() {
        return Err(PyRuntimeError::new_err(
            "nodemeter_native.configure() was not called",
        ));
    }
    Ok(unsafe { &*p })
}

// --- reading Python values (borrowed, GIL held, no Python code runs) --------------------

#[inline(always)]
unsafe fn slot(obj: *mut ffi::PyObject, offset: isize) -> *mut ffi::PyObject {
    *((obj as *mut u8).offset(offset) as *mut *mut ffi::PyObject)
}

/// UTF-8 bytes and length in code points of an exact str (None: not one, or unencodable).
#[inline]
unsafe fn text<'a>(o: *mut ffi::PyObject) -> Option<(&'a [u8], isize)> {
    if o.is_null() || ffi::PyUnicode_CheckExact(o) == 0 {
        return None;
    }
    let chars = ffi::PyUnicode_GET_LENGTH(o);
    if ffi::PyUnicode_IS_COMPACT_ASCII(o) != 0 {
        // the common case: ASCII text is its own UTF-8, stored right after the header
        let p = ffi::_PyUnicode_COMPACT_DATA(o) as *const u8;
        return Some((std::slice::from_raw_parts(p, chars as usize), chars));
    }
    let mut n: ffi::Py_ssize_t = 0;
    let p = ffi::PyUnicode_AsUTF8AndSize(o, &mut n);
    if p.is_null() {
        ffi::PyErr_Clear(); // lone surrogates: the Python path raises the usual error
        return None;
    }
    Some((
        std::slice::from_raw_parts(p as *const u8, n as usize),
        chars,
    ))
}

/// An exact int that fits in i64.
#[inline]
unsafe fn int(o: *mut ffi::PyObject) -> Option<i64> {
    if o.is_null() || ffi::PyLong_CheckExact(o) == 0 {
        return None;
    }
    let mut overflow: c_int = 0;
    let v = ffi::PyLong_AsLongLongAndOverflow(o, &mut overflow);
    if overflow != 0 {
        return None;
    }
    if v == -1 && !ffi::PyErr_Occurred().is_null() {
        ffi::PyErr_Clear();
        return None;
    }
    Some(v)
}

#[inline]
fn index_of(members: &[*mut ffi::PyObject], o: *mut ffi::PyObject) -> Option<usize> {
    members.iter().position(|&m| m == o)
}

// --- writing Avro ----------------------------------------------------------------------

#[inline(always)]
fn put_long(buf: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

#[inline(always)]
fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_long(buf, b.len() as i64);
    buf.extend_from_slice(b);
}

/// An Avro map from an exact dict of at most ``max_len`` entries: one block (count,
/// entries written by ``entry``), then the end marker. None: not the plain case.
unsafe fn put_map(
    buf: &mut Vec<u8>,
    d: *mut ffi::PyObject,
    max_len: isize,
    mut entry: impl FnMut(&mut Vec<u8>, *mut ffi::PyObject, *mut ffi::PyObject) -> Option<()>,
) -> Option<()> {
    if d.is_null() || ffi::PyDict_CheckExact(d) == 0 {
        return None;
    }
    let n = ffi::PyDict_Size(d);
    if n > max_len {
        return None;
    }
    if n > 0 {
        put_long(buf, n as i64);
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = ptr::null_mut();
        let mut v: *mut ffi::PyObject = ptr::null_mut();
        while ffi::PyDict_Next(d, &mut pos, &mut k, &mut v) != 0 {
            entry(buf, k, v)?;
        }
    }
    buf.push(0);
    Some(())
}

// --- validation rules (each mirrors nodemeter.events) ----------------------------------

fn tenant_ok(b: &[u8]) -> bool {
    // \A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z: the whole string (no trailing "\n")
    match b.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 127
                && rest.iter().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'@' | b'-')
                })
        }
        None => false,
    }
}

fn custom_name_ok(b: &[u8]) -> bool {
    // \A[a-z][a-z0-9_.]{0,63}\Z
    match b.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() <= 63
                && rest.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.')
                })
        }
        None => false,
    }
}

impl Config {
    /// A required id: a non-empty str within the id length limit.
    #[inline]
    unsafe fn id<'a>(&self, o: *mut ffi::PyObject) -> Option<&'a [u8]> {
        let (b, n) = text(o)?;
        (n >= 1 && n <= self.max_id_len).then_some(b)
    }

    /// An optional id stored as a plain string ("" allowed).
    #[inline]
    unsafe fn opt_id_str<'a>(&self, o: *mut ffi::PyObject) -> Option<&'a [u8]> {
        let (b, n) = text(o)?;
        (n <= self.max_id_len).then_some(b)
    }

    /// An optional id stored as a union [null, string]: writes it.
    #[inline]
    unsafe fn put_opt_id(
        &self,
        buf: &mut Vec<u8>,
        o: *mut ffi::PyObject,
        limit: bool,
    ) -> Option<()> {
        if o == ffi::Py_None() {
            buf.push(0);
            return Some(());
        }
        let (b, n) = text(o)?;
        if limit && n > self.max_id_len {
            return None;
        }
        buf.push(2);
        put_bytes(buf, b);
        Some(())
    }

    unsafe fn put_time(&self, buf: &mut Vec<u8>, dt: *mut ffi::PyObject) -> Option<()> {
        if dt.is_null() || ffi::PyDateTime_CheckExact(dt) == 0 {
            return None;
        }
        let tz = ffi::PyDateTime_DATE_GET_TZINFO(dt);
        if tz.is_null() || tz == ffi::Py_None() || ffi::Py_TYPE(tz) != self.timezone_type {
            return None; // naive (invalid) or a tzinfo class whose offset may run Python code
        }
        let offset_us: i64 = if tz == ffi::PyDateTime_TimeZone_UTC() {
            0
        } else {
            // datetime.timezone: a fixed offset, computed in C
            let off =
                ffi::PyObject_CallMethod(tz, c"utcoffset".as_ptr(), c"O".as_ptr(), ffi::Py_None());
            if off.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            if ffi::PyDelta_CheckExact(off) == 0 {
                ffi::Py_DECREF(off);
                return None;
            }
            let v = (ffi::PyDateTime_DELTA_GET_DAYS(off) as i64 * 86_400
                + ffi::PyDateTime_DELTA_GET_SECONDS(off) as i64)
                * 1_000_000
                + ffi::PyDateTime_DELTA_GET_MICROSECONDS(off) as i64;
            ffi::Py_DECREF(off);
            v
        };
        let days = days_from_civil(
            ffi::PyDateTime_GET_YEAR(dt) as i64,
            ffi::PyDateTime_GET_MONTH(dt) as i64,
            ffi::PyDateTime_GET_DAY(dt) as i64,
        );
        let secs = days * 86_400
            + ffi::PyDateTime_DATE_GET_HOUR(dt) as i64 * 3600
            + ffi::PyDateTime_DATE_GET_MINUTE(dt) as i64 * 60
            + ffi::PyDateTime_DATE_GET_SECOND(dt) as i64;
        put_long(
            buf,
            secs * 1_000_000 + ffi::PyDateTime_DATE_GET_MICROSECOND(dt) as i64 - offset_us,
        );
        Some(())
    }

    /// attributes: an exact dict of exact str → exact str within the limits.
    unsafe fn put_attributes(&self, buf: &mut Vec<u8>, d: *mut ffi::PyObject) -> Option<()> {
        put_map(buf, d, self.max_attributes, |buf, k, v| {
            let (kb, kn) = text(k)?;
            let (vb, vn) = text(v)?;
            if kn > self.max_id_len || vn > self.max_attribute_len {
                return None;
            }
            put_bytes(buf, kb);
            put_bytes(buf, vb);
            Some(())
        })
    }

    /// Meter slot ``i``: an exact int within its limit.
    unsafe fn put_quantity(
        &self,
        buf: &mut Vec<u8>,
        m: *mut ffi::PyObject,
        i: usize,
    ) -> Option<()> {
        let v = int(slot(m, self.meters[i]))?;
        if v < 0 || v > self.limits[i] {
            return None;
        }
        put_long(buf, v);
        Some(())
    }

    unsafe fn put_meters(&self, buf: &mut Vec<u8>, m: *mut ffi::PyObject) -> Option<()> {
        if m.is_null() || ffi::Py_TYPE(m) != self.meters_type {
            return None;
        }
        let off = &self.meters;
        for i in 0..5 {
            // input, output, cached_input, cache_write tokens, gpu_ms
            self.put_quantity(buf, m, i)?;
        }
        let (gpu_type, gpu_type_len) = text(slot(m, off[5]))?;
        if gpu_type_len > self.max_id_len {
            return None;
        }
        put_bytes(buf, gpu_type);
        let source = slot(m, off[6]);
        let source_ix = index_of(&self.gpu, source)?;
        // gpu_ms given without a source (slot 4 was checked above)
        if source == self.gpu_none && int(slot(m, off[4])) != Some(0) {
            return None;
        }
        put_long(buf, source_ix as i64);
        self.put_quantity(buf, m, 7)?; // cpu_ms
        self.put_quantity(buf, m, 8)?; // api_calls
        put_map(buf, slot(m, off[9]), self.max_custom, |buf, k, v| {
            let (kb, _) = text(k)?;
            if !custom_name_ok(kb) {
                return None;
            }
            let q = int(v)?;
            if q < 0 || q > self.custom_limit {
                return None;
            }
            put_bytes(buf, kb);
            put_long(buf, q);
            Some(())
        })
    }

    /// Encode a UsageEvent into buf and its key into key; None: leave it to Python.
    unsafe fn usage<'a>(
        &self,
        buf: &mut Vec<u8>,
        ev: *mut ffi::PyObject,
    ) -> Option<(&'a [u8], &'a [u8])> {
        let f = |i: usize| slot(ev, self.usage[i]);
        buf.extend_from_slice(&self.usage_head);
        let event_id = self.id(f(0))?;
        let tenant = self.id(f(1))?;
        if !tenant_ok(tenant) {
            return None;
        }
        let request_id = self.id(f(2))?;
        put_bytes(buf, event_id);
        put_bytes(buf, tenant);
        put_bytes(buf, request_id);
        put_bytes(buf, self.id(f(3))?); // node_id
        put_bytes(buf, self.id(f(4))?); // span_id
        self.put_opt_id(buf, f(5), true)?; // parent_span_id
        put_bytes(buf, self.opt_id_str(f(6))?); // branch_path
        put_bytes(buf, self.opt_id_str(f(7))?); // workflow
        self.put_opt_id(buf, f(8), true)?; // model
        self.put_opt_id(buf, f(9), true)?; // provider
        let sequence = int(f(10))?;
        if sequence < 0 {
            return None;
        }
        put_long(buf, sequence);
        self.put_meters(buf, f(11))?;
        put_long(buf, index_of(&self.status, f(12))? as i64);
        let billable = f(13);
        if billable == ffi::Py_True() {
            buf.push(1);
        } else if billable == ffi::Py_False() {
            buf.push(0);
        } else {
            return None;
        }
        self.put_opt_id(buf, f(14), false)?; // non_billable_reason: not length-checked
        self.put_time(buf, f(15))?;
        self.put_opt_id(buf, f(16), true)?; // trace_id
        put_bytes(buf, self.opt_id_str(f(17))?); // producer
        self.put_attributes(buf, f(18))?;
        Some((tenant, request_id))
    }

    unsafe fn end<'a>(
        &self,
        buf: &mut Vec<u8>,
        end: *mut ffi::PyObject,
    ) -> Option<(&'a [u8], &'a [u8])> {
        let f = |i: usize| slot(end, self.end[i]);
        buf.extend_from_slice(&self.end_head);
        let event_id = self.id(f(0))?;
        let tenant = self.id(f(1))?;
        if !tenant_ok(tenant) {
            return None;
        }
        let request_id = self.id(f(2))?;
        put_bytes(buf, event_id);
        put_bytes(buf, tenant);
        put_bytes(buf, request_id);
        put_bytes(buf, text(f(3))?.0); // workflow: not validated on a RequestEnd
        put_bytes(buf, self.id(f(4))?); // root_span_id
        let span_count = int(f(5))?;
        if !(0..=MAX_SPAN_COUNT).contains(&span_count) {
            return None;
        }
        put_long(buf, span_count);
        put_long(buf, index_of(&self.status, f(6))? as i64);
        self.put_time(buf, f(7))?;
        self.put_attributes(buf, f(8))?;
        Some((tenant, request_id))
    }

    /// (key, value) as a new tuple, or None when the record is not a plain valid one.
    unsafe fn fast(&self, py: Python<'_>, record: *mut ffi::PyObject) -> Option<Py<PyAny>> {
        let tp = ffi::Py_TYPE(record);
        let is_usage = tp == self.usage_type;
        if !is_usage && tp != self.end_type {
            return None;
        }
        BUF.with(|cell| {
            let mut guard = cell.try_borrow_mut().ok()?;
            let buf: &mut Vec<u8> = &mut guard;
            buf.clear();
            let (tenant, request_id) = if is_usage {
                self.usage(buf, record)?
            } else {
                self.end(buf, record)?
            };
            // key: tenant + "/" + request_id, written straight into the bytes object
            let klen = tenant.len() + 1 + request_id.len();
            let k = ffi::PyBytes_FromStringAndSize(ptr::null(), klen as _);
            if !k.is_null() {
                let dst = ffi::PyBytes_AsString(k) as *mut u8;
                ptr::copy_nonoverlapping(tenant.as_ptr(), dst, tenant.len());
                *dst.add(tenant.len()) = b'/';
                ptr::copy_nonoverlapping(
                    request_id.as_ptr(),
                    dst.add(tenant.len() + 1),
                    request_id.len(),
                );
            }
            let v = ffi::PyBytes_FromStringAndSize(buf.as_ptr() as *const _, buf.len() as _);
            let t = ffi::PyTuple_New(2);
            if k.is_null() || v.is_null() || t.is_null() {
                // out of memory: let Python raise it on the slow path
                ffi::Py_XDECREF(k);
                ffi::Py_XDECREF(v);
                ffi::Py_XDECREF(t);
                ffi::PyErr_Clear();
                return None;
            }
            ffi::PyTuple_SET_ITEM(t, 0, k);
            ffi::PyTuple_SET_ITEM(t, 1, v);
            Some(Py::from_owned_ptr(py, t))
        })
    }
}

/// Proleptic Gregorian date → days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// --- decoding: single-object bytes → UsageEvent (the stream worker's hot loop) --------

/// CRC-64-AVRO fingerprints of the usage_event schemas the decoder below implements
/// field by field; `configure_decoder` refuses schemas whose fingerprints differ.
const USAGE_V1_FP: [u8; 8] = [0xdd, 0x5e, 0x02, 0xa8, 0xaf, 0xae, 0x7c, 0x85];
const USAGE_V2_FP: [u8; 8] = [0x71, 0xcf, 0x07, 0x1f, 0x15, 0x0c, 0xfc, 0x2f];
/// The enum symbols of those schemas, in order (the Python enums must list them so).
const STATUS_SYMBOLS: [&str; 3] = ["OK", "ERROR", "PARTIAL"];
const GPU_SYMBOLS: [&str; 3] = ["NONE", "MEASURED", "ESTIMATED"];

struct Decoder {
    cfg: &'static Config,
    new_datetime: unsafe extern "C" fn(
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *mut ffi::PyObject,
        *mut ffi::PyTypeObject,
    ) -> *mut ffi::PyObject,
    datetime_type: *mut ffi::PyTypeObject,
    utc: *mut ffi::PyObject,
    slow_decode: Py<PyAny>,
}

// Only touched with the GIL held.
unsafe impl Send for Decoder {}
unsafe impl Sync for Decoder {}

static DECODER: AtomicPtr<Decoder> = AtomicPtr::new(ptr::null_mut());

fn check_symbols(
    py: Python<'_>,
    what: &str,
    members: &[*mut ffi::PyObject],
    symbols: &[&str],
) -> PyResult<()> {
    let mut given = Vec::new();
    for &m in members {
        let m = unsafe { Bound::from_borrowed_ptr(py, m) };
        given.push(m.getattr("value")?.extract::<String>()?);
    }
    if given != symbols {
        return Err(PyValueError::new_err(format!(
            "{what} symbols {given:?} differ from the compiled decoder's {symbols:?}"
        )));
    }
    Ok(())
}

/// A class the decoder may fill itself: `object.__new__`, no `__post_init__`.
fn check_plain_class(py: Python<'_>, cls: *mut ffi::PyTypeObject) -> PyResult<()> {
    let cls = unsafe { Bound::from_borrowed_ptr(py, cls as *mut ffi::PyObject) };
    let object_new = py
        .import("builtins")?
        .getattr("object")?
        .getattr("__new__")?;
    if !cls.getattr("__new__")?.is(&object_new) || cls.hasattr("__post_init__")? {
        return Err(PyValueError::new_err(format!(
            "{} is not a plain dataclass (own __new__ or __post_init__)",
            cls.getattr("__name__")?
        )));
    }
    Ok(())
}

/// Set up the decoder (after ``configure``, whose classes, enums and limits it uses).
///
/// ``usage_v1_head`` / ``usage_v2_head``: magic + fingerprint of the SDK's usage_event
/// schemas v1 and v2; ``latest_usage_version``: the version records are read as.
/// Refuses (ValueError) anything but the schemas compiled in; the SDK then keeps
/// the Python decoder. ``slow_decode``: ``codec.decode_record``, for everything else.
#[pyfunction]
#[pyo3(signature = (*, usage_v1_head, usage_v2_head, latest_usage_version, slow_decode))]
fn configure_decoder(
    py: Python<'_>,
    usage_v1_head: Vec<u8>,
    usage_v2_head: Vec<u8>,
    latest_usage_version: i64,
    slow_decode: Py<PyAny>,
) -> PyResult<()> {
    let cfg = config()?;
    let head = |fp: &[u8; 8]| [&[0xc3u8, 0x01][..], &fp[..]].concat();
    if usage_v1_head != head(&USAGE_V1_FP) || usage_v2_head != head(&USAGE_V2_FP) {
        return Err(PyValueError::new_err(
            "usage_event schema fingerprints differ from the compiled decoder's",
        ));
    }
    if latest_usage_version != 2 {
        return Err(PyValueError::new_err(format!(
            "usage_event v{latest_usage_version} is the latest; the compiled decoder reads into v2"
        )));
    }
    check_symbols(py, "status", &cfg.status, &STATUS_SYMBOLS)?;
    check_symbols(py, "gpu_source", &cfg.gpu, &GPU_SYMBOLS)?;
    check_plain_class(py, cfg.usage_type)?;
    check_plain_class(py, cfg.meters_type)?;
    let api = unsafe { ffi::PyDateTimeAPI() };
    if api.is_null() {
        return Err(PyRuntimeError::new_err("datetime C API unavailable"));
    }
    let dec = Decoder {
        cfg,
        new_datetime: unsafe { (*api).DateTime_FromDateAndTime },
        datetime_type: unsafe { (*api).DateTimeType },
        utc: unsafe { ffi::PyDateTime_TimeZone_UTC() },
        slow_decode,
    };
    // as in configure: an older decoder is leaked, not freed
    DECODER.store(Box::into_raw(Box::new(dec)), Ordering::Release);
    Ok(())
}

fn decoder() -> PyResult<&'static Decoder> {
    let p = DECODER.load(Ordering::Acquire);
    if p.is_null() {
        return Err(PyRuntimeError::new_err(
            "nodemeter_native.configure_decoder() was not called",
        ));
    }
    Ok(unsafe { &*p })
}

/// An owned reference, released when dropped (so every early return cleans up).
struct Owned(*mut ffi::PyObject);

impl Owned {
    /// A new reference, or None (the error cleared) when the call failed.
    #[inline(always)]
    unsafe fn new(p: *mut ffi::PyObject) -> Option<Owned> {
        if p.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(Owned(p))
    }

    #[inline(always)]
    unsafe fn borrowed(p: *mut ffi::PyObject) -> Owned {
        ffi::Py_INCREF(p);
        Owned(p)
    }

    #[inline(always)]
    fn into_ptr(self) -> *mut ffi::PyObject {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        unsafe { ffi::Py_DECREF(self.0) }
    }
}

/// Moves ``value`` into the (empty) slot at ``offset`` of ``obj``.
#[inline(always)]
unsafe fn set_slot(obj: &Owned, offset: isize, value: Owned) {
    *((obj.0 as *mut u8).offset(offset) as *mut *mut ffi::PyObject) = value.into_ptr();
}

/// A reader of the Avro body; None: not the plain case (truncated, odd encodings).
struct Body<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Body<'a> {
    /// A zigzag varint of at most 10 bytes (a 64-bit value; longer ones are left to fastavro).
    #[inline(always)]
    fn long(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            if shift == 63 {
                if c > 1 {
                    return None;
                }
                z |= (c as u64) << 63;
                break;
            }
            z |= ((c & 0x7f) as u64) << shift;
            if c & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Some((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    #[inline(always)]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.long()?).ok()?;
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    /// A str (strict UTF-8, as fastavro decodes) and its length in code points.
    #[inline(always)]
    unsafe fn text(&mut self) -> Option<(Owned, isize, &'a [u8])> {
        let b = self.bytes()?;
        let o = Owned::new(ffi::PyUnicode_DecodeUTF8(
            b.as_ptr() as *const _,
            b.len() as ffi::Py_ssize_t,
            c"strict".as_ptr(),
        ))?;
        let n = ffi::PyUnicode_GET_LENGTH(o.0);
        Some((o, n, b))
    }

    /// An enum index below ``n``.
    #[inline(always)]
    fn index(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.long()?).ok().filter(|&k| k < n)
    }
}

impl Decoder {
    /// A str of at most ``max`` code points (``min`` at least) when validating.
    #[inline(always)]
    unsafe fn text(&self, r: &mut Body<'_>, check: bool, min: isize, max: isize) -> Option<Owned> {
        let (o, n, _) = r.text()?;
        if check && !(min..=max).contains(&n) {
            return None;
        }
        Some(o)
    }

    /// A union [null, string]; the string within ``max`` code points when validating.
    #[inline(always)]
    unsafe fn opt_text(&self, r: &mut Body<'_>, check: bool, max: isize) -> Option<Owned> {
        match r.long()? {
            0 => Some(Owned::borrowed(ffi::Py_None())),
            1 => self.text(r, check, 0, max),
            _ => None,
        }
    }

    /// A long within ``0..=max`` when validating.
    #[inline(always)]
    unsafe fn quantity(&self, r: &mut Body<'_>, check: bool, max: i64) -> Option<(Owned, i64)> {
        let v = r.long()?;
        if check && !(0..=max).contains(&v) {
            return None;
        }
        Some((Owned::new(ffi::PyLong_FromLongLong(v))?, v))
    }

    /// An Avro map (blocks with positive counts) into a new dict of at most ``max_len``
    /// entries when validating; ``entry`` reads one key/value pair.
    #[inline(always)]
    unsafe fn map<'a>(
        &self,
        r: &mut Body<'a>,
        check: bool,
        max_len: isize,
        mut entry: impl FnMut(&mut Body<'a>) -> Option<(Owned, Owned)>,
    ) -> Option<Owned> {
        let d = Owned::new(ffi::PyDict_New())?;
        loop {
            let n = r.long()?;
            if n == 0 {
                break;
            }
            if n < 0 {
                return None; // blocks with a byte size: left to fastavro
            }
            for _ in 0..n {
                let (k, v) = entry(r)?;
                if ffi::PyDict_SetItem(d.0, k.0, v.0) != 0 {
                    ffi::PyErr_Clear();
                    return None;
                }
            }
        }
        if check && ffi::PyDict_Size(d.0) > max_len {
            return None;
        }
        Some(d)
    }

    /// timestamp-micros as fastavro reads it: an aware datetime in `timezone.utc`.
    #[inline(always)]
    unsafe fn time(&self, r: &mut Body<'_>) -> Option<Owned> {
        let us = r.long()?;
        let days = us.div_euclid(86_400_000_000);
        let rest = us.rem_euclid(86_400_000_000);
        let (y, m, d) = civil_from_days(days);
        if !(1..=9999).contains(&y) {
            return None; // fastavro raises OverflowError: its error, its message
        }
        let secs = rest / 1_000_000;
        Owned::new((self.new_datetime)(
            y as c_int,
            m as c_int,
            d as c_int,
            (secs / 3600) as c_int,
            (secs / 60 % 60) as c_int,
            (secs % 60) as c_int,
            (rest % 1_000_000) as c_int,
            self.utc,
            self.datetime_type,
        ))
    }

    unsafe fn meters(&self, r: &mut Body<'_>, check: bool) -> Option<Owned> {
        let c = self.cfg;
        let m = Owned::new(ffi::PyType_GenericAlloc(c.meters_type, 0))?;
        let mut gpu_ms = 0;
        for i in 0..5 {
            // input, output, cached_input, cache_write tokens, gpu_ms
            let (o, v) = self.quantity(r, check, c.limits[i])?;
            set_slot(&m, c.meters[i], o);
            gpu_ms = v;
        }
        set_slot(&m, c.meters[5], self.text(r, check, 0, c.max_id_len)?); // gpu_type
        let source = r.index(c.gpu.len())?;
        if check && source == 0 && gpu_ms != 0 {
            return None; // gpu_ms given without a source
        }
        set_slot(&m, c.meters[6], Owned::borrowed(c.gpu[source]));
        for i in [7, 8] {
            // cpu_ms, api_calls
            set_slot(&m, c.meters[i], self.quantity(r, check, c.limits[i])?.0);
        }
        let custom = self.map(r, check, c.max_custom, |r| {
            let (k, _, kb) = r.text()?;
            if check && !custom_name_ok(kb) {
                return None;
            }
            Some((k, self.quantity(r, check, c.custom_limit)?.0))
        })?;
        set_slot(&m, c.meters[9], custom);
        Some(m)
    }

    /// A UsageEvent from single-object bytes of usage_event v1 or v2, or None where
    /// the Python decoder should have the say (anything unusual). With ``check``,
    /// also None for a record `events.validate_record` might refuse.
    unsafe fn usage(&self, data: &[u8], check: bool) -> Option<Owned> {
        if data.len() < 10 || data[..2] != [0xc3, 0x01] {
            return None;
        }
        let v2 = if data[2..10] == USAGE_V2_FP {
            true
        } else if data[2..10] == USAGE_V1_FP {
            false
        } else {
            return None;
        };
        let c = self.cfg;
        let (id, u) = (c.max_id_len, &c.usage);
        let mut r = Body { b: data, i: 10 };
        let ev = Owned::new(ffi::PyType_GenericAlloc(c.usage_type, 0))?;
        set_slot(&ev, u[0], self.text(&mut r, check, 1, id)?); // event_id
        let (tenant, _, tb) = r.text()?;
        if check && !tenant_ok(tb) {
            return None;
        }
        set_slot(&ev, u[1], tenant);
        for &offset in &u[2..5] {
            // request_id, node_id, span_id
            set_slot(&ev, offset, self.text(&mut r, check, 1, id)?);
        }
        set_slot(&ev, u[5], self.opt_text(&mut r, check, id)?); // parent_span_id
        set_slot(&ev, u[6], self.text(&mut r, check, 0, id)?); // branch_path
        set_slot(&ev, u[7], self.text(&mut r, check, 0, id)?); // workflow
        set_slot(&ev, u[8], self.opt_text(&mut r, check, id)?); // model
        set_slot(&ev, u[9], self.opt_text(&mut r, check, id)?); // provider
        set_slot(&ev, u[10], self.quantity(&mut r, check, i64::MAX)?.0); // sequence
        set_slot(&ev, u[11], self.meters(&mut r, check)?);
        set_slot(
            &ev,
            u[12],
            Owned::borrowed(c.status[r.index(c.status.len())?]),
        );
        let billable = match *r.b.get(r.i)? {
            0 => ffi::Py_False(),
            1 => ffi::Py_True(),
            _ => return None,
        };
        r.i += 1;
        set_slot(&ev, u[13], Owned::borrowed(billable));
        set_slot(&ev, u[14], self.opt_text(&mut r, false, 0)?); // non_billable_reason
        set_slot(&ev, u[15], self.time(&mut r)?);
        if v2 {
            set_slot(&ev, u[16], self.opt_text(&mut r, check, id)?); // trace_id
            set_slot(&ev, u[17], self.text(&mut r, check, 0, id)?); // producer
        } else {
            // v1 read as v2: the defaults
            set_slot(&ev, u[16], Owned::borrowed(ffi::Py_None()));
            set_slot(
                &ev,
                u[17],
                Owned::new(ffi::PyUnicode_FromStringAndSize(ptr::null(), 0))?,
            );
        }
        let attributes = self.map(&mut r, check, c.max_attributes, |r| {
            let k = self.text(r, check, 0, id)?;
            Some((k, self.text(r, check, 0, c.max_attribute_len)?))
        })?;
        set_slot(&ev, u[18], attributes);
        (r.i == data.len()).then_some(ev) // trailing bytes: Python's DecodeError
    }

    #[inline(always)]
    unsafe fn usage_of(&self, data: &Bound<'_, PyAny>, check: bool) -> Option<Owned> {
        let p = data.as_ptr();
        if ffi::PyBytes_CheckExact(p) == 0 {
            return None;
        }
        let bytes = std::slice::from_raw_parts(
            ffi::PyBytes_AsString(p) as *const u8,
            ffi::PyBytes_Size(p) as usize,
        );
        self.usage(bytes, check)
    }
}

/// Days since 1970-01-01 → proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

// --- Python API ------------------------------------------------------------------------
/// Decode a usage event (single-object usage_event v1 or v2, read as v2): the
/// ``UsageEvent`` ``codec.decode_record`` returns, or None for anything else (other
/// records, unknown fingerprints, malformed or odd bytes: the Python decoder's case).
/// No validation.
#[pyfunction]
fn decode_usage_event(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let dec = decoder()?;
    Ok(unsafe { dec.usage_of(data, false) }
        .map(|o| unsafe { Py::from_owned_ptr(py, o.into_ptr()) }))
}

/// As ``decode_usage_event``, and only for an event that passes the SDK's validation
/// (``events.validate_record``); None otherwise, also where it is unsure.
#[pyfunction]
fn decode_valid_usage_event(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyAny>>> {
    let dec = decoder()?;
    Ok(
        unsafe { dec.usage_of(data, true) }
            .map(|o| unsafe { Py::from_owned_ptr(py, o.into_ptr()) }),
    )
}

/// ``codec.decode_record``: compiled for usage events, the Python decoder (its
/// records, its errors) for everything else.
#[pyfunction]
fn decode_record(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let dec = decoder()?;
    match unsafe { dec.usage_of(data, false) } {
        Some(o) => Ok(unsafe { Py::from_owned_ptr(py, o.into_ptr()) }),
        None => dec.slow_decode.call1(py, (data,)),
    }
}

/// Validate and encode a UsageEvent or RequestEnd: ``(key, value)``.
///
/// Raises what ``events.validate_record`` raises for invalid records (the Python
/// validator runs for any record the compiled checks do not accept outright).
#[pyfunction]
fn validate_encode(py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let cfg = config()?;
    match unsafe { cfg.fast(py, record.as_ptr()) } {
        Some(t) => Ok(t),
        None => cfg.slow_validated.call1(py, (record,)),
    }
}

/// Encode an already validated record: ``(key, value)`` (no validation errors raised).
#[pyfunction]
fn encode(py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let cfg = config()?;
    match unsafe { cfg.fast(py, record.as_ptr()) } {
        Some(t) => Ok(t),
        None => cfg.slow_plain.call1(py, (record,)),
    }
}

/// The compiled path alone: ``(key, value)``, or None where it defers to Python.
/// For tests and diagnostics.
#[pyfunction]
fn try_encode(py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let cfg = config()?;
    Ok(unsafe { cfg.fast(py, record.as_ptr()) })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(configure, m)?)?;
    m.add_function(wrap_pyfunction!(validate_encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(try_encode, m)?)?;
    m.add_function(wrap_pyfunction!(configure_decoder, m)?)?;
    m.add_function(wrap_pyfunction!(decode_usage_event, m)?)?;
    m.add_function(wrap_pyfunction!(decode_valid_usage_event, m)?)?;
    m.add_function(wrap_pyfunction!(decode_record, m)?)?;
    m.add("TENANT_PATTERN", TENANT_PATTERN)?;
    m.add("CUSTOM_PATTERN", CUSTOM_PATTERN)?;
    Ok(())
}
