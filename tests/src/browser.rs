//! A real browser for the web console's tests: Debian's Chromium, headless,
//! driven through ChromeDriver's WebDriver protocol (JSON over HTTP, spoken
//! with [`crate::http`]: no driver library).
//!
//! The browser is installed when it is missing ([`ensure_installed`]: `apt-get
//! install chromium chromium-driver`, as `.ci/run` does up front); a test
//! that cannot get one fails, saying why, rather than skipping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::http;

/// Where Debian puts them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian puts it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Installs Chromium and ChromeDriver from the Debian packages when they
/// are missing (once per process); panics with the reason if that fails.
pub fn ensure_installed() {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done || (Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()) {
        *done = true;
        return;
    }
    eprintln!("installing chromium and chromium-driver (apt-get) for the console's browser test");
    let status = Command::new("sh")
        .arg("-c")
        .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver")
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()) && Path::new(CHROMEDRIVER).exists(),
        "the console's browser test needs {CHROMIUM} and {CHROMEDRIVER}: `apt-get install chromium chromium-driver` failed ({status:?}); install them and run again"
    );
    *done = true;
}

/// One headless Chromium under its own ChromeDriver, with a fresh profile.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a browser session.
    pub async fn start() -> Browser {
        ensure_installed();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        // "ChromeDriver was started successfully on port 40645."
        let port = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
                let rest = line.split("started successfully on port ").nth(1)?;
                rest.trim_end_matches('.').trim().parse::<u16>().ok()
            });
            // Keep draining, so the driver never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .expect("read chromedriver's port")
        .expect("chromedriver said on which port it listens");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                "timeouts": { "script": 60_000, "pageLoad": 60_000, "implicit": 0 },
            }}
        });
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; returns its `value` (panics on an error).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = [("Content-Type", "application/json; charset=utf-8")];
        let r = http::request(self.addr, method, path, &headers, body.as_bytes()).await;
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// The element `css` selects (panics if none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks the element `css` selects, as a user would.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `body` (a function body: `return ...;`) in the page.
    pub async fn eval(&self, body: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": body, "args": [] })),
        )
        .await
    }

    /// Waits in the page until the JavaScript expression `condition` is
    /// truthy (checked as the page changes, up to 45 s); returns its value.
    /// On time-out, panics with what the page shows.
    pub async fn wait_for(&self, condition: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
const deadline = Date.now() + 45000;
const check = () => {{
  let v = null;
  try {{ v = ({condition}); }} catch (e) {{ v = null; }}
  if (v) {{ done({{ ok: v }}); return; }}
  if (Date.now() > deadline) {{ done({{ timeout: document.body.innerText.slice(0, 3000) }}); return; }}
  setTimeout(check, 25);
}};
check();"#
        );
        let v = self
            .call(
                "POST",
                &self.at("/execute/async"),
                Some(json!({ "script": script, "args": [] })),
            )
            .await;
        match v.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!(
                "waited in vain for `{condition}`; the page shows:\n{}",
                v["timeout"].as_str().unwrap_or_default()
            ),
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a screenshot in base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the session (the browser exits) and stops the driver.
    pub async fn close(mut self) {
        let path = self.at("");
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            http::request(self.addr, "DELETE", &path, &[], b"").await
        })
        .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `close`: the driver at least goes (the
        // browser follows when its pipe to the driver closes).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
