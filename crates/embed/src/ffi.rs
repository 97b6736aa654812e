//! `dlopen` of libpython and the few calls that start an interpreter.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use echion_cpython_layout::Addr;

use crate::EmbedError;

/// A loaded libpython (never unloaded: the interpreter lives as long as the
/// process).
pub(crate) struct Library {
    handle: *mut libc::c_void,
}

// SAFETY: a dlopen handle may be used from any thread.
unsafe impl Send for Library {}

impl Library {
    pub(crate) fn open(path: &Path) -> Result<Self, EmbedError> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| EmbedError::Load {
            path: path.to_owned(),
            reason: "NUL in path".into(),
        })?;
        // SAFETY: a valid NUL-terminated path; RTLD_GLOBAL so that the
        // interpreter's extension modules find its symbols.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns null or a valid C string.
            let reason = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    String::from("unknown error")
                } else {
                    CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            return Err(EmbedError::Load {
                path: path.to_owned(),
                reason,
            });
        }
        Ok(Self { handle })
    }

    fn symbol(&self, name: &'static CStr) -> Result<*mut libc::c_void, EmbedError> {
        // SAFETY: a live handle and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        if p.is_null() {
            Err(EmbedError::Symbol(name.to_str().unwrap_or("a symbol")))
        } else {
            Ok(p)
        }
    }

    /// `Py_GetVersion()`, which may be called before the interpreter starts.
    pub(crate) fn version(&self) -> Result<String, EmbedError> {
        let f = self.symbol(c"Py_GetVersion")?;
        // SAFETY: `const char *Py_GetVersion(void)` returns a static string.
        let text = unsafe {
            let f: extern "C" fn() -> *const libc::c_char = std::mem::transmute(f);
            CStr::from_ptr(f()).to_string_lossy().into_owned()
        };
        Ok(text)
    }

    /// The address of `_PyRuntime`.
    pub(crate) fn runtime(&self) -> Result<Addr, EmbedError> {
        Ok(Addr(self.symbol(c"_PyRuntime")? as u64))
    }

    /// Starts the interpreter on a new thread and runs `script` there; the
    /// thread ends when the script does (keeping the interpreter, not
    /// finalised).
    pub(crate) fn run_on_new_thread(self, script: CString) -> Result<(), EmbedError> {
        let init = self.symbol(c"Py_InitializeEx")?;
        let run = self.symbol(c"PyRun_SimpleString")?;
        let save = self.symbol(c"PyEval_SaveThread")?;
        let (init, run, save) = (init as usize, run as usize, save as usize);
        std::thread::Builder::new()
            .name("embedded-python".into())
            .spawn(move || {
                // SAFETY: the three functions have these C signatures in
                // every CPython 3; the interpreter is initialised once, on
                // this thread, which then runs the script holding the GIL
                // and releases it when the script returns.
                unsafe {
                    let init: extern "C" fn(libc::c_int) = std::mem::transmute(init);
                    let run: extern "C" fn(*const libc::c_char) -> libc::c_int =
                        std::mem::transmute(run);
                    let save: extern "C" fn() -> *mut libc::c_void = std::mem::transmute(save);
                    init(0);
                    run(script.as_ptr());
                    save();
                }
            })
            .map(|_| ())
            .map_err(|_| EmbedError::Symbol("a thread"))
    }
}
