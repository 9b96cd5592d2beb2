//! The model in the Prometheus text format (0.0.4), encoded by the `prometheus-client` crate,
//! for the HTTP server's `/metrics`. Names and labels are the ones the OpenTelemetry
//! Collector's Prometheus exporter gives the OTLP metrics, so a dashboard works on either.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::model::Model;
use super::names;
use crate::store::MetricsText;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes the model on each scrape.
pub(crate) struct Exposition {
    registry: Registry,
}

struct ModelCollector(Arc<Model>);

impl fmt::Debug for ModelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelCollector")
    }
}

impl Exposition {
    pub(crate) fn new(model: Arc<Model>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ModelCollector(model)));
        Exposition { registry }
    }
}

impl MetricsText for Exposition {
    fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would leave a partial text.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

type L<'a> = [(&'static str, &'a str)];

impl Collector for ModelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let m = &self.0;
        let running = m.running();
        let op_types = m.op_types();
        let levels = m.levels();

        let mut e = encoder.encode_descriptor(
            names::prom::ACTIVE,
            names::help::ACTIVE,
            None,
            MetricType::Gauge,
        )?;
        for (t, n) in &running.active_by_type {
            let labels: &L<'_> = &[(names::label::OPERATION_TYPE, t)];
            ConstGauge::new(*n as i64).encode(e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            names::prom::FINISHED,
            names::help::FINISHED,
            None,
            MetricType::Counter,
        )?;
        for t in &op_types {
            for (outcome, n) in t.finished() {
                let labels: &L<'_> = &[
                    (names::label::OPERATION_TYPE, &t.label),
                    (names::label::OUTCOME, outcome),
                ];
                ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            names::prom::FAILURES,
            names::help::FAILURES,
            None,
            MetricType::Counter,
        )?;
        for l in &levels {
            let labels: &L<'_> = &[(names::label::LEVEL_TYPE, &l.label)];
            ConstCounter::new(l.failures()).encode(e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            names::prom::DURATION,
            names::help::DURATION,
            None,
            MetricType::Histogram,
        )?;
        for l in &levels {
            // The encoder sums the buckets and adds `+Inf` from the count.
            let h = l.histogram();
            let labels: &L<'_> = &[(names::label::LEVEL_TYPE, &l.label)];
            e.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)?;
        }

        let mut ids = HashMap::with_capacity(running.ops.len());
        for op in &running.ops {
            ids.insert(op.id, op.id.to_string());
        }
        let mut e = encoder.encode_descriptor(
            names::prom::RATIO,
            names::help::RATIO,
            None,
            MetricType::Gauge,
        )?;
        for op in &running.ops {
            if let Some(r) = op.ratio {
                let labels: &L<'_> = &[
                    (names::label::OPERATION_TYPE, &op.operation_type),
                    (names::label::OPERATION_ID, &ids[&op.id]),
                    (names::label::OPERATION_NAME, &op.name),
                ];
                ConstGauge::new(r).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            names::prom::ETA,
            names::help::ETA,
            None,
            MetricType::Gauge,
        )?;
        for op in &running.ops {
            if let Some(s) = op.eta_s {
                let labels: &L<'_> = &[
                    (names::label::OPERATION_TYPE, &op.operation_type),
                    (names::label::OPERATION_ID, &ids[&op.id]),
                    (names::label::OPERATION_NAME, &op.name),
                ];
                ConstGauge::new(s).encode(e.encode_family(&labels)?)?;
            }
        }
        let e = encoder.encode_descriptor(
            names::prom::OMITTED,
            names::help::OMITTED,
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(running.omitted as i64).encode(e)?;
        Ok(())
    }
}
