//! `[traces]`: OpenTelemetry traces exported over OTLP/HTTP (docs/tracing.md),
//! and how the standard `OTEL_*` environment variables combine with it: a
//! variable that is set wins over its setting. Pure: the environment is passed in.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{invalid, SettingsError};

/// `[traces]`. Export is off unless an endpoint is set, here or in the environment.
/// Its `Debug` shows the endpoint without user, password or query.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSettings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces`
    /// is appended. `OTEL_EXPORTER_OTLP_ENDPOINT`. Empty: no export.
    pub endpoint: String,
    /// The resource's `service.name`. `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off` or `parentbased_traceidratio`. `OTEL_TRACES_SAMPLER`.
    pub sampler: String,
    /// The ratio of the `traceidratio` samplers, 0 to 1. `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_arg: f64,
    /// More resource attributes (`deployment.environment.name = "prod"`).
    /// `OTEL_RESOURCE_ATTRIBUTES` adds to them and wins for the keys it names.
    pub resource_attributes: BTreeMap<String, String>,
    /// The most finished spans waiting for export; more are dropped and counted
    /// (`webhook_connector_trace_spans_dropped_total{reason="queue_full"}`).
    pub max_queued_spans: usize,
}

impl std::fmt::Debug for TracesSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracesSettings")
            .field("endpoint", &redacted(&self.endpoint))
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("sampler_arg", &self.sampler_arg)
            .field("resource_attributes", &self.resource_attributes)
            .field("max_queued_spans", &self.max_queued_spans)
            .finish()
    }
}

/// The most spans `traces.max_queued_spans` may keep waiting (the queue's
/// slots are set aside at start).
pub const MAX_QUEUED_SPANS: usize = 100_000;

/// The time between two exports when `OTEL_BSP_SCHEDULE_DELAY` does not say.
const SCHEDULE_DELAY_MS: u64 = 5000;

/// `url` as it may be shown: scheme, host, port and path, without a user,
/// password or query that could hold a secret.
pub fn redacted(url: &str) -> String {
    match url.trim().parse::<hyper::Uri>() {
        Ok(uri) if uri.authority().is_some() => {
            let host = uri.host().unwrap_or_default();
            let port = uri.port().map_or(String::new(), |p| format!(":{p}"));
            let scheme = uri.scheme_str().unwrap_or_default();
            format!("{scheme}://{host}{port}{}", uri.path())
        }
        _ if url.trim().is_empty() => String::new(),
        _ => "(not a URL)".into(),
    }
}

/// Whether `url` is an absolute http:// or https:// URL.
fn usable(url: &str) -> bool {
    let parsed = url.parse::<hyper::Uri>();
    parsed
        .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some())
}

/// Where spans of the base URL `url` are posted.
fn traces_path(url: &str) -> String {
    format!("{}/v1/traces", url.trim().trim_end_matches('/'))
}

/// Whether `url` is a usable base URL: `/v1/traces` is appended to it, so it
/// has no query or fragment for the path to land in.
fn usable_base(url: &str) -> bool {
    !url.contains(['?', '#']) && usable(&traces_path(url))
}

impl Default for TracesSettings {
    fn default() -> Self {
        TracesSettings {
            endpoint: String::new(),
            service_name: "webhook-connector".into(),
            sampler: "parentbased_always_on".into(),
            sampler_arg: 1.0,
            resource_attributes: BTreeMap::new(),
            max_queued_spans: 2048,
        }
    }
}

/// Which spans are recorded and exported (the OpenTelemetry samplers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Recorded when the trace id falls within the ratio.
    Ratio(f64),
    /// As the incoming parent says; a new trace as the inner sampler says.
    ParentBased(Root),
}

/// The sampler of new traces behind [`Sampler::ParentBased`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Sampler {
    /// The sampler called `name`, with `arg` as its ratio.
    fn parse(name: &str, arg: f64) -> Option<Sampler> {
        Some(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::Ratio(arg),
            "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Sampler::ParentBased(Root::Ratio(arg)),
            _ => return None,
        })
    }
}

/// Where and how spans are exported, settings and environment combined. Its
/// `Debug` shows the URL redacted.
#[derive(Clone, PartialEq)]
pub struct Export {
    /// The full URL spans are posted to.
    pub traces_url: String,
    /// `OTEL_SERVICE_NAME`, which wins over every other `service.name`.
    pub service_name: Option<String>,
    pub sampler: Sampler,
    /// The settings' resource attributes, `service.name` the setting's; those of
    /// `OTEL_RESOURCE_ATTRIBUTES` are added over them when the exporter is made.
    pub resource_attributes: BTreeMap<String, String>,
    pub max_queued_spans: usize,
    /// The time between two exports: `OTEL_BSP_SCHEDULE_DELAY`, 5 s by default.
    pub schedule_delay: std::time::Duration,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("traces_url", &redacted(&self.traces_url))
            .field("sampler", &self.sampler)
            .field("max_queued_spans", &self.max_queued_spans)
            .finish_non_exhaustive()
    }
}

const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio";

impl TracesSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let endpoint = self.endpoint.trim();
        if !(endpoint.is_empty() || usable_base(endpoint)) {
            return invalid(
                "traces.endpoint",
                "not an http:// or https:// URL without a query",
            );
        }
        if Sampler::parse(&self.sampler, self.sampler_arg).is_none() {
            return invalid("traces.sampler", &format!("not a sampler: use {SAMPLERS}"));
        }
        if !(0.0..=1.0).contains(&self.sampler_arg) {
            return invalid("traces.sampler_arg", "not a ratio from 0 to 1");
        }
        if !(1..=MAX_QUEUED_SPANS).contains(&self.max_queued_spans) {
            return invalid("traces.max_queued_spans", "must be from 1 to 100000");
        }
        Ok(())
    }

    /// What to export, with the environment `env` (a variable's value, when it
    /// is set and not empty) over the settings; `Ok(None)`: export is off (no
    /// endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    /// `Err`: a variable that cannot be used, named with why.
    pub fn export(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Export>, SettingsError> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let disabled =
            env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter = env("OTEL_TRACES_EXPORTER");
        match exporter.as_deref().map(str::trim) {
            _ if disabled => return Ok(None),
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(_) => {
                return invalid_var("OTEL_TRACES_EXPORTER", "only otlp and none are supported")
            }
        }
        let base = traces_path;
        let signal = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        // A base URL gets `/v1/traces` appended: no query for it to land in.
        let no_query = |url: &str| !url.contains(['?', '#']);
        let (traces_url, from, fits) = match (signal, env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(url), _) => (
                url.trim().to_string(),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                true,
            ),
            (None, Some(url)) => (base(&url), "OTEL_EXPORTER_OTLP_ENDPOINT", no_query(&url)),
            (None, None) if self.endpoint.trim().is_empty() => return Ok(None),
            (None, None) => (
                base(&self.endpoint),
                "traces.endpoint",
                no_query(&self.endpoint),
            ),
        };
        if !(fits && usable(&traces_url)) {
            return invalid_var(
                from,
                "not an http:// or https:// URL (a base URL without a query)",
            );
        }
        Ok(Some(Export {
            traces_url,
            service_name: env("OTEL_SERVICE_NAME"),
            sampler: self.sampler(&env)?,
            schedule_delay: schedule_delay(&env)?,
            resource_attributes: self.resource(),
            max_queued_spans: self.max_queued_spans,
        }))
    }

    /// The resource attributes of the settings, with `service_name`.
    fn resource(&self) -> BTreeMap<String, String> {
        let mut attributes = self.resource_attributes.clone();
        attributes.insert("service.name".into(), self.service_name.clone());
        attributes
    }

    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` over the settings.
    fn sampler(&self, env: &impl Fn(&str) -> Option<String>) -> Result<Sampler, SettingsError> {
        let arg = match env("OTEL_TRACES_SAMPLER_ARG") {
            None => self.sampler_arg,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                _ => return invalid_var("OTEL_TRACES_SAMPLER_ARG", "not a ratio from 0 to 1"),
            },
        };
        match env("OTEL_TRACES_SAMPLER") {
            None => Ok(Sampler::parse(&self.sampler, arg).expect("checked at load")),
            Some(name) => match Sampler::parse(&name, arg) {
                Some(sampler) => Ok(sampler),
                None => invalid_var(
                    "OTEL_TRACES_SAMPLER",
                    &format!("not a sampler: use {SAMPLERS}"),
                ),
            },
        }
    }
}

/// `OTEL_BSP_SCHEDULE_DELAY`: milliseconds, at least 1 (0 would keep the
/// exporter's thread spinning).
fn schedule_delay(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<std::time::Duration, SettingsError> {
    let Some(text) = env("OTEL_BSP_SCHEDULE_DELAY") else {
        return Ok(std::time::Duration::from_millis(SCHEDULE_DELAY_MS));
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms >= 1 => Ok(std::time::Duration::from_millis(ms)),
        _ => invalid_var(
            "OTEL_BSP_SCHEDULE_DELAY",
            "not a whole number of milliseconds of at least 1",
        ),
    }
}

/// A refused environment variable, named like a setting.
fn invalid_var<T>(name: &str, message: &str) -> Result<T, SettingsError> {
    Err(SettingsError::Invalid {
        key: name.into(),
        message: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(
        settings: &TracesSettings,
        vars: &[(&str, &str)],
    ) -> Result<Option<Export>, SettingsError> {
        settings.export(|name| {
            (vars.iter())
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn with_endpoint() -> TracesSettings {
        TracesSettings {
            endpoint: "http://collector:4318/".into(),
            ..TracesSettings::default()
        }
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(export(&TracesSettings::default(), &[]).unwrap(), None);
        assert_eq!(
            export(
                &TracesSettings::default(),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]
            )
            .unwrap(),
            None
        );
        assert_eq!(
            export(&with_endpoint(), &[("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            export(&with_endpoint(), &[("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(export(&with_endpoint(), &[("OTEL_SDK_DISABLED", "false")])
            .unwrap()
            .is_some());
        let zipkin = export(&with_endpoint(), &[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(
            zipkin.to_string().contains("OTEL_TRACES_EXPORTER"),
            "{zipkin}"
        );
    }

    #[test]
    fn the_environment_wins_over_the_settings() {
        let settings = with_endpoint();
        let from_settings = export(&settings, &[]).unwrap().unwrap();
        assert_eq!(from_settings.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(from_settings.service_name, None);
        let service = from_settings.resource_attributes.get("service.name");
        assert_eq!(service.map(String::as_str), Some("webhook-connector"));
        assert_eq!(from_settings.sampler, Sampler::ParentBased(Root::AlwaysOn));
        assert_eq!(from_settings.max_queued_spans, 2048);
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4318"),
            ("OTEL_SERVICE_NAME", "hooks"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ];
        let from_env = export(&settings, &vars).unwrap().unwrap();
        assert_eq!(from_env.traces_url, "https://otel:4318/v1/traces");
        assert_eq!(from_env.service_name.as_deref(), Some("hooks"));
        assert_eq!(from_env.sampler, Sampler::ParentBased(Root::Ratio(0.01)));
        let signal = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
            vars[0],
        ];
        assert_eq!(
            export(&TracesSettings::default(), &signal)
                .unwrap()
                .unwrap()
                .traces_url,
            "http://t:1/x"
        );
    }

    #[test]
    fn every_sampler_by_name() {
        for (name, sampler) in [
            ("always_on", Sampler::AlwaysOn),
            ("always_off", Sampler::AlwaysOff),
            ("traceidratio", Sampler::Ratio(0.5)),
            (
                "parentbased_always_on",
                Sampler::ParentBased(Root::AlwaysOn),
            ),
            (
                "parentbased_always_off",
                Sampler::ParentBased(Root::AlwaysOff),
            ),
            (
                "parentbased_traceidratio",
                Sampler::ParentBased(Root::Ratio(0.5)),
            ),
        ] {
            assert_eq!(Sampler::parse(name, 0.5), Some(sampler));
            let vars = [
                ("OTEL_TRACES_SAMPLER", name),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ];
            assert_eq!(
                export(&with_endpoint(), &vars).unwrap().unwrap().sampler,
                sampler
            );
        }
        assert_eq!(Sampler::parse("jaeger_remote", 1.0), None);
    }

    #[test]
    fn urls_are_shown_without_user_password_or_query() {
        let secret = "https://user:s3cret@otel.example:4318/v1/traces?api_key=k3y";
        assert_eq!(redacted(secret), "https://otel.example:4318/v1/traces");
        assert_eq!(redacted("http://c/"), "http://c/");
        assert_eq!(redacted("http://u:p|w@c:4318"), "(not a URL)");
        assert_eq!(redacted("/v1/traces"), "(not a URL)");
        assert_eq!(redacted(""), "");
        let settings = TracesSettings {
            endpoint: secret.into(),
            ..TracesSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(
            shown.contains("\"https://otel.example:4318/v1/traces\""),
            "{shown}"
        );
        // A base URL with a query is refused; a signal URL may have one.
        assert!(export(&settings, &[]).is_err());
        let exported = export(
            &TracesSettings::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", secret)],
        );
        let exported = exported.unwrap().unwrap();
        assert_eq!(exported.traces_url, secret);
        let shown = format!("{exported:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(
            shown.contains("\"https://otel.example:4318/v1/traces\""),
            "{shown}"
        );
        assert_eq!(exported.schedule_delay, std::time::Duration::from_secs(5));
        let every_100_ms = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
        let exported = export(&with_endpoint(), &every_100_ms).unwrap().unwrap();
        assert_eq!(
            exported.schedule_delay,
            std::time::Duration::from_millis(100)
        );
    }

    #[test]
    fn unusable_variables_are_named() {
        for (name, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:43 18"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318?tenant=a"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "c:4318/v1/traces"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "ftp://c:4318/v1/traces",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ] {
            let err = export(&with_endpoint(), &[(name, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn unusable_settings_are_named() {
        let changed = |change: fn(&mut TracesSettings)| {
            let mut settings = TracesSettings::default();
            change(&mut settings);
            settings
        };
        for (settings, key) in [
            (
                changed(|s| s.endpoint = "collector".into()),
                "traces.endpoint",
            ),
            (
                changed(|s| s.endpoint = "http://c:4318/?tenant=a".into()),
                "traces.endpoint",
            ),
            (changed(|s| s.sampler = "x".into()), "traces.sampler"),
            (changed(|s| s.sampler_arg = -0.1), "traces.sampler_arg"),
            (
                changed(|s| s.max_queued_spans = 0),
                "traces.max_queued_spans",
            ),
            (
                changed(|s| s.max_queued_spans = MAX_QUEUED_SPANS + 1),
                "traces.max_queued_spans",
            ),
        ] {
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(with_endpoint().validate().is_ok());
    }
}
