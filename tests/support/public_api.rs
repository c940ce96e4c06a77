//! The guest library's public entry points, read from its rustdoc JSON, so that a test can
//! check it exercises every one of them and notices a new one.
//!
//! `cargo rustdoc --lib` is run with the guest features (`encoding`, `ovf`) but not `sim`
//! (the simulator's API is not part of the guest library), with `RUSTC_BOOTSTRAP=1 -Z unstable-options --output-format json`, which
//! the stable toolchain accepts, into `<target>/rustdoc-json` so the main build is left
//! alone. The JSON format is unstable: every field read here is checked, and a layout this
//! code does not understand fails with the `format_version` it found.
//!
//! The rule, from the crate root (following `pub use` re-exports and public modules, but not
//! into `proto`, the protocol constants, or `sim`, the simulator):
//!
//! - every public function, by its name (`probe_backdoor`; `module::name` below the root);
//! - every public inherent method or associated function of every public struct, enum or
//!   union, and of the type behind every public type alias, as `Type::name`
//!   (`BackdoorGuard::get_version`; `EnhancedChan`'s are `RpciChannel`'s), except for types
//!   that implement `Copy`: those are values the host reported (`Version`, `VcpuInfo`, …),
//!   which cannot own the I/O access a guard gives back on drop (`Copy` excludes `Drop`),
//!   so their methods only compute from their own fields and never reach the backdoor;
//! - every method of every public trait the crate defines, as `Trait::name`
//!   (`BackdoorAccess::backdoor`, `Backdoor::lb`): code outside the crate calls them too.
//!
//! Trait impls (`Debug`, `Display`, `From`, `Drop`, auto and blanket impls) are not entry
//! points of this crate and are left out.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `format_version` this reader was written against (rustc 1.95). Other versions are
/// read too; any field missing or shaped differently fails with a clear message.
const TESTED_FORMAT: u64 = 57;

/// Modules whose items are not guest entry points.
const SKIPPED_MODULES: [&str; 2] = ["proto", "sim"];

/// The entry points, and how long generating the JSON took.
pub fn entry_points() -> (BTreeSet<String>, Duration) {
    let started = Instant::now();
    let json = rustdoc_json();
    let took = started.elapsed();
    let doc: Value = serde_json::from_slice(&json).expect("rustdoc output is JSON");
    (Doc::new(&doc).entry_points(), took)
}

/// `<target>/rustdoc-json/doc/vmw_backdoor.json`, (re)generated.
fn rustdoc_json() -> Vec<u8> {
    // The running test is `<target>[/<triple>]/<profile>/deps/<name>`.
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<test>");
    let dir: PathBuf = target.join("rustdoc-json");
    let out = Command::new(env!("CARGO"))
        .args(["rustdoc", "--lib", "--quiet", "--features", "encoding,ovf"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .args(["--", "-Z", "unstable-options", "--output-format", "json"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &dir)
        .output()
        .expect("run cargo rustdoc");
    assert!(
        out.status.success(),
        "cargo rustdoc --output-format json failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("doc").join("vmw_backdoor.json");
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The parsed JSON, with checked accessors.
struct Doc<'a> {
    doc: &'a Value,
    index: &'a serde_json::Map<String, Value>,
    version: u64,
}

impl<'a> Doc<'a> {
    fn new(doc: &'a Value) -> Self {
        let version = doc
            .get("format_version")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("rustdoc JSON without a numeric `format_version`"));
        let index = doc
            .get("index")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{}", unknown(version, "`index` is not an object")));
        Doc {
            doc,
            index,
            version,
        }
    }

    /// Fails with what was expected and the format version found.
    fn fail(&self, what: &str) -> ! {
        panic!("{}", unknown(self.version, what))
    }

    /// `v[key]`, which must be there.
    fn get(&self, v: &'a Value, key: &str) -> &'a Value {
        v.get(key)
            .unwrap_or_else(|| self.fail(&format!("no `{key}` in {}", brief(v))))
    }

    fn array(&self, v: &'a Value, key: &str) -> &'a [Value] {
        self.get(v, key)
            .as_array()
            .unwrap_or_else(|| self.fail(&format!("`{key}` is not an array in {}", brief(v))))
    }

    fn str(&self, v: &'a Value, key: &str) -> &'a str {
        self.get(v, key)
            .as_str()
            .unwrap_or_else(|| self.fail(&format!("`{key}` is not a string in {}", brief(v))))
    }

    /// An id (a number since format 36 or so, a string before) as the index's key.
    fn key(&self, id: &Value) -> String {
        match id {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => self.fail(&format!("an id is {}", brief(other))),
        }
    }

    /// The item with this id, if it is in the index (items of other crates are not).
    fn item(&self, id: &Value) -> Option<&'a Value> {
        self.index.get(&self.key(id))
    }

    /// `(kind, body)` of an item: its `inner` is `{ "<kind>": { … } }`.
    fn inner(&self, item: &'a Value) -> (&'a str, &'a Value) {
        let inner = self
            .get(item, "inner")
            .as_object()
            .filter(|o| o.len() == 1)
            .unwrap_or_else(|| {
                self.fail(&format!(
                    "`inner` is not a one-key object in {}",
                    brief(item)
                ))
            });
        let (kind, body) = inner.iter().next().expect("one key");
        (kind, body)
    }

    fn name(&self, item: &'a Value) -> &'a str {
        self.str(item, "name")
    }

    fn is_public(&self, item: &Value) -> bool {
        item.get("visibility").and_then(Value::as_str) == Some("public")
    }

    fn entry_points(&self) -> BTreeSet<String> {
        let root = self
            .item(self.get(self.doc, "root"))
            .unwrap_or_else(|| self.fail("the root id is not in the index"));
        let mut found = Found::default();
        self.module(root, "", &mut found);

        let mut names = BTreeSet::new();
        names.extend(found.functions);
        for ty in &found.types {
            names.extend(self.inherent_methods(ty));
        }
        for tr in &found.traits {
            names.extend(self.trait_methods(tr));
        }
        assert!(
            !names.is_empty(),
            "{}",
            unknown(self.version, "no entry point found from the crate root")
        );
        names
    }

    /// The public items of a module (`prefix` is its path, `""` at the root).
    fn module(&self, module: &'a Value, prefix: &str, found: &mut Found<'a>) {
        let (kind, body) = self.inner(module);
        if kind != "module" {
            self.fail(&format!("the root or a module is a `{kind}`"));
        }
        for id in self.array(body, "items") {
            let Some(item) = self.item(id) else { continue };
            if !self.is_public(item) {
                continue;
            }
            self.public_item(item, None, prefix, found);
        }
    }

    /// One public item, under the name it is exported as (`alias`, for a `pub use … as`).
    fn public_item(
        &self,
        item: &'a Value,
        alias: Option<&str>,
        prefix: &str,
        found: &mut Found<'a>,
    ) {
        let (kind, body) = self.inner(item);
        match kind {
            "use" | "import" => {
                let target = self.get(body, "id");
                if target.is_null() {
                    return; // a re-export of a primitive or something rustdoc could not resolve
                }
                let Some(target) = self.item(target) else {
                    return; // another crate's item
                };
                let glob = self.get(body, "is_glob").as_bool() == Some(true);
                if glob {
                    self.module(target, prefix, found);
                } else {
                    let name = self.str(body, "name");
                    self.public_item(target, Some(name), prefix, found);
                }
            }
            "module" => {
                let name = alias.unwrap_or_else(|| self.name(item));
                if SKIPPED_MODULES.contains(&name) {
                    return;
                }
                self.module(item, &format!("{prefix}{name}::"), found);
            }
            "function" => {
                let name = alias.unwrap_or_else(|| self.name(item));
                found.functions.push(format!("{prefix}{name}"));
            }
            "struct" | "enum" | "union" => found.types.push(item),
            "type_alias" | "typedef" => {
                // The methods are the aliased type's (`EnhancedChan` is `RpciChannel<…>`).
                let ty = self.get(body, "type");
                if let Some(path) = ty.get("resolved_path") {
                    if let Some(target) = self.item(self.get(path, "id")) {
                        self.public_item(target, None, prefix, found);
                    }
                }
            }
            "trait" => found.traits.push(item),
            _ => {} // constants, statics, macros: nothing to call
        }
    }

    /// `Type::method` for the public inherent methods of a type not `Copy`.
    fn inherent_methods(&self, ty: &'a Value) -> Vec<String> {
        let name = self.name(ty);
        let (_, body) = self.inner(ty);
        let impls: Vec<&Value> = self
            .array(body, "impls")
            .iter()
            .map(|id| {
                let item = self.item(id).unwrap_or_else(|| {
                    self.fail(&format!("an impl of {name} is not in the index"))
                });
                let (kind, imp) = self.inner(item);
                if kind != "impl" {
                    self.fail(&format!("an impl of {name} is a `{kind}`"));
                }
                imp
            })
            .collect();
        if impls.iter().any(|imp| self.is_copy(imp)) {
            return Vec::new();
        }
        let mut methods = Vec::new();
        for imp in impls {
            if !self.get(imp, "trait").is_null() {
                continue;
            }
            for id in self.array(imp, "items") {
                let Some(item) = self.item(id) else { continue };
                if self.inner(item).0 == "function" && self.is_public(item) {
                    methods.push(format!("{name}::{}", self.name(item)));
                }
            }
        }
        methods
    }

    /// Whether an impl is `impl Copy for …`.
    fn is_copy(&self, imp: &Value) -> bool {
        let tr = self.get(imp, "trait");
        if tr.is_null() {
            return false;
        }
        // The full path from `paths` when rustdoc gives it, else the path as written.
        let full = tr
            .get("id")
            .and_then(|id| self.doc.get("paths")?.get(self.key(id)))
            .and_then(|p| p.get("path"))
            .and_then(Value::as_array);
        match full {
            Some(path) => {
                let path: Vec<_> = path.iter().filter_map(Value::as_str).collect();
                path == ["core", "marker", "Copy"]
            }
            None => matches!(self.str(tr, "path"), "Copy" | "core::marker::Copy"),
        }
    }

    /// `Trait::method` for every method a crate trait declares.
    fn trait_methods(&self, tr: &'a Value) -> Vec<String> {
        let name = self.name(tr);
        let (_, body) = self.inner(tr);
        self.array(body, "items")
            .iter()
            .filter_map(|id| self.item(id))
            .filter(|item| self.inner(item).0 == "function")
            .map(|item| format!("{name}::{}", self.name(item)))
            .collect()
    }
}

#[derive(Default)]
struct Found<'a> {
    functions: Vec<String>,
    types: Vec<&'a Value>,
    traits: Vec<&'a Value>,
}

fn unknown(version: u64, what: &str) -> String {
    format!(
        "rustdoc JSON format_version {version} not understood: {what} (this reader was \
         written for format {TESTED_FORMAT}, rustc 1.95; see tests/support/public_api.rs)"
    )
}

/// A value, shortened for a message.
fn brief(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}
