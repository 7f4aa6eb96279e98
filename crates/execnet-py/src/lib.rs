//! `execnet_rs._core`: the Rust side of the Python bindings.
//!
//! Python objects are converted to and from `execnet::Value` (and so to the wire format
//! by the execnet crate's own serializer); channels travel as `Channel` objects. Every
//! call that waits or does I/O runs with the GIL released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use execnet::{Complex, Dict, Int, Value};
use num_bigint::BigInt;
use pyo3::create_exception;
use pyo3::exceptions::{PyEOFError, PyException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet,
    PyString, PyTuple,
};

create_exception!(_core, DataFormatError, PyException, "A value that the wire format cannot carry, or bytes that are not in the format.");
create_exception!(_core, RemoteError, PyException, "Code on the remote side raised; the argument is the remote traceback.");
create_exception!(_core, TimeoutError, PyOSError, "A receive or wait did not complete in time.");
create_exception!(_core, HostNotFound, PyOSError, "A gateway could not be started or reached.");
create_exception!(_core, GatewayLost, PyEOFError, "The connection to the worker broke.");

fn to_pyerr(e: execnet::Error) -> PyErr {
    use execnet::Error as E;
    match e {
        E::Remote { traceback } => RemoteError::new_err(traceback),
        E::Timeout(d) => TimeoutError::new_err(format!("no answer within {:.3}s", d.as_secs_f64())),
        E::EndOfChannel { .. } => PyEOFError::new_err(e.to_string()),
        E::ChannelClosed { .. } => PyOSError::new_err(e.to_string()),
        E::GatewayLost(_) => GatewayLost::new_err(e.to_string()),
        E::DataFormat { .. } => DataFormatError::new_err(e.to_string()),
        E::Spawn { .. } => HostNotFound::new_err(e.to_string()),
        E::Spec { .. } => PyValueError::new_err(e.to_string()),
        // As execnet: misusing a channel (receive with a callback, a second callback)
        // raises IOError, which is OSError.
        E::Misuse(_) => PyOSError::new_err(e.to_string()),
        E::Io(_) => PyOSError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

fn timeout_of(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s >= 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!("timeout must be a non-negative number, not {s}"))),
    }
}

/// Runs a blocking wait in slices of at most [`SIGNAL_SLICE`] with the GIL released,
/// and between slices lets Python's signal handlers run: Ctrl-C (KeyboardInterrupt) and
/// pytest-timeout's alarm reach a thread blocked in receive() or waitclose(), as they do
/// in execnet. `wait(slice)` must end in `Error::Timeout` when the slice passes with
/// nothing done; the caller's own timeout (None: forever) is kept across slices.
fn interruptible<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    wait: impl Fn(Duration) -> Result<T, execnet::Error> + Sync,
) -> PyResult<T> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let slice = match deadline {
            None => SIGNAL_SLICE,
            Some(d) => d.saturating_duration_since(std::time::Instant::now()).min(SIGNAL_SLICE),
        };
        match py.detach(|| wait(slice)) {
            Err(execnet::Error::Timeout(_)) if deadline.map_or(true, |d| std::time::Instant::now() < d) => {
                py.check_signals()?;
            }
            Err(execnet::Error::Timeout(_)) => {
                return Err(to_pyerr(execnet::Error::Timeout(timeout.unwrap_or_default())))
            }
            other => return other.map_err(to_pyerr),
        }
    }
}

const SIGNAL_SLICE: Duration = Duration::from_millis(100);

// ---- conversion ----------------------------------------------------------------------

fn items_to_values(it: Bound<'_, pyo3::types::PyIterator>) -> PyResult<Vec<Value>> {
    let mut out = Vec::new();
    for x in it {
        out.push(to_value(&x?)?);
    }
    Ok(out)
}

/// A Python object as a wire value; the types execnet's serializer accepts, exactly.
fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::None);
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract::<bool>()?));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(Int::from(BigInt::from(i))));
        }
        return Ok(Value::Int(Int::from(obj.extract::<BigInt>()?)));
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.extract::<f64>()?));
    }
    if obj.is_exact_instance_of::<PyComplex>() {
        let c = obj.cast::<PyComplex>()?;
        return Ok(Value::Complex(Complex::new(c.real(), c.imag())));
    }
    if obj.is_exact_instance_of::<PyString>() {
        return Ok(Value::Str(obj.extract::<String>()?));
    }
    if obj.is_exact_instance_of::<PyBytes>() {
        return Ok(Value::Bytes(obj.extract::<Vec<u8>>()?));
    }
    if obj.is_exact_instance_of::<PyList>() {
        return Ok(Value::List(items_to_values(obj.try_iter()?)?));
    }
    if obj.is_exact_instance_of::<PyTuple>() {
        return Ok(Value::Tuple(items_to_values(obj.try_iter()?)?));
    }
    if obj.is_exact_instance_of::<PySet>() {
        return Ok(Value::Set(items_to_values(obj.try_iter()?)?));
    }
    if obj.is_exact_instance_of::<PyFrozenSet>() {
        return Ok(Value::FrozenSet(items_to_values(obj.try_iter()?)?));
    }
    if obj.is_exact_instance_of::<PyDict>() {
        let d = obj.cast::<PyDict>()?;
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((to_value(&k)?, to_value(&v)?));
        }
        return Ok(Value::Dict(Dict::from_entries(entries)));
    }
    if let Ok(ch) = obj.extract::<PyRef<'_, Channel>>() {
        return Ok(Value::Channel(ch.inner.clone()));
    }
    // execnet's Python Channel wrapper keeps ours as `_ch`.
    if let Ok(inner) = obj.getattr("_ch") {
        if let Ok(ch) = inner.extract::<PyRef<'_, Channel>>() {
            return Ok(Value::Channel(ch.inner.clone()));
        }
    }
    Err(DataFormatError::new_err(format!(
        "cannot serialize {} object",
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
    )))
}

/// A wire value as a Python object.
fn from_value(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => match i.as_i64() {
            Some(n) => n.into_pyobject(py)?.into_any().unbind(),
            None => i.to_bigint().into_pyobject(py)?.into_any().unbind(),
        },
        Value::Float(f) => PyFloat::new(py, f).into_any().unbind(),
        Value::Complex(c) => PyComplex::from_doubles(py, c.re, c.im).into_any().unbind(),
        Value::Str(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::List(items) => {
            let objs = items.into_iter().map(|x| from_value(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, objs)?.into_any().unbind()
        }
        Value::Tuple(items) => {
            let objs = items.into_iter().map(|x| from_value(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, objs)?.into_any().unbind()
        }
        Value::Set(items) => {
            let objs = items.into_iter().map(|x| from_value(py, x)).collect::<PyResult<Vec<_>>>()?;
            PySet::new(py, objs.iter())?.into_any().unbind()
        }
        Value::FrozenSet(items) => {
            let objs = items.into_iter().map(|x| from_value(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyFrozenSet::new(py, objs.iter())?.into_any().unbind()
        }
        Value::Dict(d) => {
            let out = PyDict::new(py);
            for (k, v) in d.into_entries() {
                out.set_item(from_value(py, k)?, from_value(py, v)?)?;
            }
            out.into_any().unbind()
        }
        Value::Channel(ch) => Py::new(py, Channel { inner: ch })?.into_any(),
    })
}

#[pyfunction]
fn dumps(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
    let v = to_value(obj)?;
    let bytes = execnet::dumps(&v).map_err(to_pyerr)?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

#[pyfunction]
fn loads(py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
    let v: Value = execnet::loads(data).map_err(to_pyerr)?;
    from_value(py, v)
}

// ---- channels ------------------------------------------------------------------------

/// An item delivered to a callback, or the end of the channel (`None`).
struct Delivered(Option<Value>);

impl<'de> serde::Deserialize<'de> for Delivered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Delivered(Some(v)))
    }
}

#[pyclass(module = "execnet_rs._core", frozen)]
struct Channel {
    inner: execnet::Channel,
}

#[pymethods]
impl Channel {
    #[getter]
    fn id(&self) -> i32 {
        self.inner.id()
    }

    #[getter]
    fn _gateway(&self) -> Gateway {
        Gateway { inner: self.inner.gateway().clone() }
    }

    fn send(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = to_value(item)?;
        let ch = &self.inner;
        py.detach(|| ch.send(&v)).map_err(|e| match e {
            // As execnet: sending where nothing can arrive is an OSError (IOError);
            // receiving there stays an EOFError (GatewayLost).
            execnet::Error::GatewayLost(_) => PyOSError::new_err(e.to_string()),
            e => to_pyerr(e),
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = timeout_of(timeout)?;
        let ch = &self.inner;
        let v: Value = interruptible(py, t, |slice| ch.receive_timeout(slice))?;
        from_value(py, v)
    }

    #[pyo3(signature = (timeout=None))]
    fn waitclose(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = timeout_of(timeout)?;
        let ch = &self.inner;
        interruptible(py, t, |slice| ch.waitclose(Some(slice)))
    }

    #[pyo3(signature = (error=None))]
    fn close(&self, py: Python<'_>, error: Option<String>) -> PyResult<()> {
        let ch = &self.inner;
        py.detach(|| match error {
            None => ch.close(),
            Some(text) => ch.close_with_error(&text),
        })
        .map_err(to_pyerr)
    }

    fn isclosed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The error the channel ended with (as the exception waitclose raises), without
    /// waiting; None while open or after a clean close.
    fn _end_error(&self) -> Option<PyErr> {
        self.inner.end_error().map(to_pyerr)
    }

    /// Calls `callback(item)` from a receiver thread for each item; with `has_end`,
    /// calls `callback(endmarker)` once when the channel ends.
    fn _setcallback(
        &self,
        py: Python<'_>,
        callback: Py<PyAny>,
        has_end: bool,
        endmarker: Py<PyAny>,
    ) -> PyResult<()> {
        let ch = &self.inner;
        let deliver = move |d: Delivered| {
            // Once the interpreter shuts down, items are dropped: a receiver thread must not
            // take the GIL of an interpreter that is going away.
            if SHUTTING_DOWN.load(Ordering::SeqCst) {
                return;
            }
            Python::try_attach(|py| {
                let arg = match d.0 {
                    Some(v) => from_value(py, v),
                    None => Ok(endmarker.clone_ref(py)),
                };
                let r = arg.and_then(|a| callback.call1(py, (a,)));
                if let Err(e) = r {
                    e.print(py);
                }
            });
        };
        py.detach(|| {
            if has_end {
                ch.set_callback_with_endmarker(deliver, Delivered(None))
            } else {
                ch.set_callback(deliver)
            }
        })
        .map_err(to_pyerr)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.extract::<PyRef<'_, Channel>>().map(|o| o.inner == self.inner).unwrap_or(false)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!("<Channel id={} gateway={}>", self.inner.id(), self.inner.gateway().id())
    }
}

// ---- gateways and groups -------------------------------------------------------------

#[pyclass(module = "execnet_rs._core", frozen)]
#[derive(Clone)]
struct Gateway {
    inner: execnet::Gateway,
}

#[pymethods]
impl Gateway {
    #[getter]
    fn id(&self) -> String {
        self.inner.id().to_string()
    }

    #[getter]
    fn spec(&self) -> String {
        self.inner.spec().as_str().to_string()
    }

    /// Runs `code`; with `call_name`, then calls `call_name(channel, **kwargs)`.
    #[pyo3(signature = (code, file_name=None, call_name=None, kwargs=None))]
    fn remote_exec(
        &self,
        py: Python<'_>,
        code: String,
        file_name: Option<String>,
        call_name: Option<String>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Channel> {
        let mut source = match call_name {
            None => execnet::Source::code(&code),
            Some(name) => {
                let kw = match kwargs {
                    Some(d) => to_value(d.as_any())?,
                    None => Value::Dict(Dict::new()),
                };
                execnet::Source::call(&code, &name, kw).map_err(to_pyerr)?
            }
        };
        if let Some(f) = file_name {
            source = source.with_file_name(f);
        }
        let gw = &self.inner;
        let ch = py.detach(|| gw.remote_exec(source)).map_err(to_pyerr)?;
        Ok(Channel { inner: ch })
    }

    fn newchannel(&self, py: Python<'_>) -> PyResult<Channel> {
        let gw = &self.inner;
        let ch = py.detach(|| gw.newchannel()).map_err(to_pyerr)?;
        Ok(Channel { inner: ch })
    }

    /// (numchannels, numexecuting, execmodel)
    fn remote_status(&self, py: Python<'_>) -> PyResult<(u64, u64, String)> {
        let gw = &self.inner;
        let st = py.detach(|| gw.remote_status()).map_err(to_pyerr)?;
        Ok((st.numchannels, st.numexecuting, st.execmodel))
    }

    /// (executable, version_info, platform, cwd, pid)
    fn rinfo(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let gw = &self.inner;
        let info = py.detach(|| gw.rinfo()).map_err(to_pyerr)?;
        let d = PyDict::new(py);
        d.set_item("executable", info.executable)?;
        d.set_item("version_info", info.version_info)?;
        d.set_item("platform", info.platform)?;
        d.set_item("cwd", info.cwd)?;
        d.set_item("pid", info.pid)?;
        Ok(d.into_any().unbind())
    }

    /// Starts a socket server inside this gateway's worker, bound to `host:port`, and
    /// returns a new gateway connected to it.
    fn new_remote_socket(&self, py: Python<'_>, host: String, port: u16) -> PyResult<Gateway> {
        let gw = &self.inner;
        let bind = format!("{host}:{port}");
        let new = py.detach(|| execnet::Gateway::new_remote_socket(gw, &bind)).map_err(to_pyerr)?;
        Ok(Gateway { inner: new })
    }

    fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// Waits until the worker answered the bootstrap (see execnet::Gateway::wait_ready).
    #[pyo3(signature = (timeout=None))]
    fn wait_ready(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let gw = &self.inner;
        interruptible(py, timeout_of(timeout)?, |slice| gw.wait_ready(slice))
    }

    fn exit(&self, py: Python<'_>) -> PyResult<()> {
        let gw = &self.inner;
        py.detach(|| gw.exit()).map_err(to_pyerr)
    }

    #[pyo3(signature = (timeout=None))]
    fn terminate(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = timeout_of(timeout)?.unwrap_or(execnet::DEFAULT_EXIT_TIMEOUT);
        let gw = &self.inner;
        py.detach(|| gw.terminate(t)).map_err(to_pyerr)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.extract::<PyRef<'_, Gateway>>().map(|o| o.inner == self.inner).unwrap_or(false)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.id().hash(&mut h);
        h.finish()
    }
}

#[pyclass(module = "execnet_rs._core", frozen)]
struct Group {
    inner: execnet::Group,
}

#[pymethods]
impl Group {
    #[new]
    fn new() -> Group {
        Group { inner: execnet::Group::new() }
    }

    fn makegateway(&self, py: Python<'_>, spec: String) -> PyResult<Gateway> {
        let g = &self.inner;
        let gw = py.detach(|| g.makegateway(spec.as_str())).map_err(to_pyerr)?;
        Ok(Gateway { inner: gw })
    }

    fn gateways(&self) -> Vec<Gateway> {
        self.inner.gateways().into_iter().map(|inner| Gateway { inner }).collect()
    }

    #[pyo3(signature = (timeout=None))]
    fn terminate(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = timeout_of(timeout)?.unwrap_or(execnet::DEFAULT_EXIT_TIMEOUT);
        let g = &self.inner;
        py.detach(|| g.terminate(t));
        Ok(())
    }
}

/// Checks a spec string the way gateways parse it; returns its (key, value) items and
/// its environment variables.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn parse_spec(spec: &str) -> PyResult<(Vec<(String, Option<String>)>, Vec<(String, String)>)> {
    let x = execnet::XSpec::new(spec).map_err(to_pyerr)?;
    let items = x.items().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect();
    let env = x.env().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok((items, env))
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Called at interpreter exit (atexit): callbacks stop calling into Python. The GIL is
/// let go for a moment so that a callback already waiting for it finishes now rather
/// than during finalization.
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    py.detach(|| std::thread::sleep(Duration::from_millis(50)));
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Channel>()?;
    m.add_class::<Gateway>()?;
    m.add_class::<Group>()?;
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add_function(wrap_pyfunction!(parse_spec, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    // The receiving half of RSync, shared with the Rust library's execnet::RSync.
    m.add("RSYNC_REMOTE_SOURCE", execnet::rsync::REMOTE_SOURCE)?;
    m.add("DataFormatError", py.get_type::<DataFormatError>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("HostNotFound", py.get_type::<HostNotFound>())?;
    m.add("GatewayLost", py.get_type::<GatewayLost>())?;
    Ok(())
}
