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
const TENANT_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$";
const CUSTOM_PATTERN: &str = "^[a-z][a-z0-9_.]{0,63}$";
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
    // ^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$ ; a trailing "\n" (which Python's `$`
    // lets through) is left to the Python path.
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
    // ^[a-z][a-z0-9_.]{0,63}$
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
    unsafe fn put_quantity(&self, buf: &mut Vec<u8>, m: *mut ffi::PyObject, i: usize) -> Option<()> {
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

// --- Python API ------------------------------------------------------------------------

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
    m.add("TENANT_PATTERN", TENANT_PATTERN)?;
    m.add("CUSTOM_PATTERN", CUSTOM_PATTERN)?;
    Ok(())
}
