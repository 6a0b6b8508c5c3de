//! What the target server is and what it offers, asked once before a run: the engine behind it
//! (llama.cpp takes `timings_per_token`), its models, and whether it has a `/tokenize` endpoint
//! (llama.cpp, vLLM, SGLang, the simulator) through which prompts are made exactly as long as
//! the workload says, in the server's own tokens.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::send::{bearer, http_client};
use crate::transport::{Transport, tls_failure};
use crate::url::ServerUrl;
use crate::{Error, error_chain};

/// The target as probed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerInfo {
    /// Model ids listed by `/v1/models` (empty when it could not be read).
    pub models: Vec<String>,
    /// The engine, from `/v1/models`' `owned_by` (`llamacpp`, `vllm`, `sglang`...).
    pub engine: Option<String>,
    /// `POST /tokenize` answered with token ids.
    pub tokenize: bool,
}

impl ServerInfo {
    /// The server is llama.cpp's `llama-server`.
    pub fn is_llamacpp(&self) -> bool {
        self.engine.as_deref() == Some("llamacpp")
    }
}

/// A client for the probe and `/tokenize`: bounded by `timeout`, with the API key.
#[derive(Debug, Clone)]
pub struct ServerApi {
    http: reqwest::Client,
    url: ServerUrl,
    auth: Option<reqwest::header::HeaderValue>,
    model: Option<String>,
}

impl ServerApi {
    /// For the server at `base_url`; `model` is named in `/tokenize` requests (vLLM wants it).
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        transport: &Transport,
        model: Option<String>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        Ok(Self {
            // HTTP/1.1: a server refusing a client certificate says so in an alert that h1
            // reads back as the probe's error, where h2 reports only a broken pipe.
            http: http_client(
                &Transport {
                    http1_only: true,
                    ..transport.clone()
                },
                Some(timeout),
                Default::default(),
            )?,
            url: ServerUrl::parse(base_url)?,
            auth: api_key.map(bearer).transpose()?,
            model,
        })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.auth {
            Some(a) => r.header(AUTHORIZATION, a.clone()),
            None => r,
        }
    }

    fn post(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.post(url);
        match &self.auth {
            Some(a) => r.header(AUTHORIZATION, a.clone()),
            None => r,
        }
    }

    /// Asks `/v1/models` and `/tokenize`. Neither failing is an error: what could not be
    /// learnt is left empty.
    ///
    /// A TLS failure is an error (an untrusted certificate, a name mismatch, a refused client
    /// certificate): every request would fail the same way, so nothing is sent.
    pub async fn probe(&self) -> Result<ServerInfo, Error> {
        let mut info = ServerInfo::default();
        let url = self.url.api("models");
        let got = retried(|| self.get(&url)).await;
        if let Err(e) = &got
            && let Some(why) = tls_failure(e)
        {
            return Err(Error::Http {
                url,
                msg: format!("TLS: {why}"),
            });
        }
        if let Ok(resp) = got
            && resp.status().is_success()
            && let Ok(v) = resp.json::<Value>().await
        {
            let data = v.get("data").and_then(Value::as_array);
            for m in data.into_iter().flatten() {
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    info.models.push(id.to_string());
                }
                if info.engine.is_none() {
                    info.engine = m
                        .get("owned_by")
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase);
                }
            }
        }
        info.tokenize = self.count_tokens("a").await.is_ok();
        Ok(info)
    }

    /// The number of tokens `text` is to the server (no special tokens added), by its
    /// `/tokenize` endpoint. The body carries llama.cpp's and vLLM's field names (each ignores
    /// the other's); the answer's `count`, else its `tokens`' length, is the count.
    pub async fn count_tokens(&self, text: &str) -> Result<usize, Error> {
        let url = self.url.route("tokenize");
        let mut body = json!({
            "content": text, "prompt": text, "add_special": false, "add_special_tokens": false,
        });
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        let resp = retried(|| self.post(&url).json(&body))
            .await
            .map_err(|e| Error::Http {
                url: url.clone(),
                msg: error_chain(&e),
            })?;
        if !resp.status().is_success() {
            return Err(Error::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        let v: Value = resp.json().await.map_err(|e| Error::Body {
            url: url.clone(),
            msg: error_chain(&e),
        })?;
        let n = v
            .get("count")
            .and_then(Value::as_u64)
            .map(|c| c as usize)
            .or_else(|| v.get("tokens").and_then(Value::as_array).map(Vec::len));
        n.ok_or_else(|| Error::Body {
            url,
            msg: "neither 'count' nor 'tokens' in the answer".into(),
        })
    }
}

/// Sends an idempotent request, again up to three times when it could not be sent: a connection
/// the server closed under us (an idle keep-alive it dropped, a full accept queue on a small
/// host), or one whose TLS handshake it refused just as the request went out, which hyper then
/// reports as a cancelled request, without the TLS reason; the next attempt meets the refusal
/// in the handshake and says why. A TLS failure is not retried.
async fn retried(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut attempt = 0;
    loop {
        match make().send().await {
            Err(e)
                if attempt < 3
                    && (e.is_connect() || e.is_request())
                    && crate::transport::tls_failure(&e).is_none() =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            r => return r,
        }
    }
}
