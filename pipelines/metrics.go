package pipelines

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/webhook"
)

// Collector returns the engine's metrics for a Prometheus registry. Counts
// are read from the pipelines' and adapters' own counters at scrape time, so
// measuring costs the message path nothing but the latency histogram.
func (e *Engine) Collector() prometheus.Collector { return (*collector)(e) }

type collector Engine

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("loombridge_"+name, help, labels, nil)
}

var (
	dUp           = desc("pipeline_up", "1 while the pipeline runs.", "pipeline")
	dReceived     = desc("pipeline_received_total", "Messages taken from the source.", "pipeline")
	dDone         = desc("pipeline_done_total", "Messages every matching sink took, then acked at the source.", "pipeline")
	dFiltered     = desc("pipeline_filtered_total", "Messages the filter dropped (acked).", "pipeline")
	dUnmatched    = desc("pipeline_unmatched_total", "Messages no sink's when matched (acked).", "pipeline")
	dFailed       = desc("pipeline_failed_total", "Messages a sink failed after its retries (dead-lettered, or nacked without a dead_letter).", "pipeline")
	dDeadLettered = desc("pipeline_dead_lettered_total", "Messages published to the dead letters, the webhook's per-endpoint ones included.", "pipeline")
	dExprErrors   = desc("pipeline_expression_errors_total", "Filter or when evaluations that failed (taken as no match).", "pipeline")
	dPublished    = desc("sink_published_total", "Messages the sink took.", "pipeline", "sink")
	dSinkFailed   = desc("sink_failed_attempts_total", "Publish attempts that failed.", "pipeline", "sink")
	dRetried      = desc("sink_retries_total", "Publish attempts after the first.", "pipeline", "sink")
	dSinkDead     = desc("sink_dead_lettered_total", "Messages the sink itself dead-lettered instead of delivering (a webhook endpoint's); not in sink_published_total.", "pipeline", "sink")

	dConfigInfo     = desc("config_info", "1, labelled with the SHA-256 of the configuration file running.", "hash")
	dReloadOK       = desc("config_last_reload_successful", "0 when the last reload was refused (an invalid file; the running configuration stays), else 1.")
	dLastReloadInfo = desc("config_last_reload_info", "1, labelled with the last reload's result (applied, refused) and its file's SHA-256.", "result", "hash")
	dReloads        = desc("config_reloads_total", "Reloads by result: applied, refused.", "result")
	dUnreadRoom     = desc("unread_room", "1 for each room of an embedded connection that a pipeline writes and no pipeline reads: its messages are discarded.", "pipeline", "sink", "connection", "room")

	dLoomBuffered      = desc("loom_publisher_buffered_messages", "Messages waiting in the Loom publisher's buffer.", "pipeline", "sink")
	dLoomBufferedBytes = desc("loom_publisher_buffered_bytes", "Bytes waiting in the Loom publisher's buffer.", "pipeline", "sink")
	dLoomSent          = desc("loom_publisher_sent_total", "Messages the Loom server confirmed.", "pipeline", "sink")
	dLoomResent        = desc("loom_publisher_resent_total", "Messages sent again after a failed producer stream.", "pipeline", "sink")
	dLoomUnconfirmed   = desc("loom_publisher_unconfirmed_total", "Messages written whose confirm never came.", "pipeline", "sink")
	dLoomDropped       = desc("loom_publisher_dropped_total", "Messages the Loom publisher dropped, by reason.", "pipeline", "sink", "reason")
	dLoomReconnects    = desc("loom_reconnects_total", "Connections made after the first, per source or sink.", "pipeline", "endpoint")
	dLoomRoomsWaiting  = desc("loom_publisher_rooms_waiting", "Rooms the Loom publisher holds until the server reports a consumer (admin_url).", "pipeline", "sink")
	dLoomHeld          = desc("loom_publisher_held_seconds_total", "Time rooms were held for want of a consumer, summed over rooms (admin_url).", "pipeline", "sink")
	dLoomReceived      = desc("loom_subscriber_received_total", "Messages read from Loom consumer streams.", "pipeline")
	dLoomSkipped       = desc("loom_subscriber_skipped_total", "Messages acked but not delivered, by reason.", "pipeline", "reason")

	dHookAttempts  = desc("webhook_attempts_total", "HTTP attempts by outcome: 1xx to 5xx, or error (no response).", "pipeline", "sink", "endpoint", "class")
	dHookDelivered = desc("webhook_delivered_total", "Messages an endpoint accepted (2xx).", "pipeline", "sink", "endpoint")
	dHookDead      = desc("webhook_dead_lettered_total", "Messages dead-lettered for an endpoint.", "pipeline", "sink", "endpoint")
	dHookBreaker   = desc("webhook_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", "pipeline", "sink", "endpoint")

	dLoomReachable = desc("loom_connection_up", "1 while the Loom server of a connection answers.", "connection")

	dBufStored      = desc("buffer_stored_total", "Messages the pipeline's buffer stored (the source was acked).", "pipeline")
	dBufDropped     = desc("buffer_dropped_total", "Oldest messages deleted from a full buffer (when_full: drop_oldest).", "pipeline")
	dBufRejected    = desc("buffer_rejected_total", "Messages a full buffer refused (when_full: reject; nacked to the source).", "pipeline")
	dBufBlocked     = desc("buffer_blocked_total", "Times the source waited for room in a full buffer (when_full: block).", "pipeline")
	dQueueMessages  = desc("buffer_queue_messages", "Messages stored that the sink has not acked.", "pipeline", "sink")
	dQueueBytes     = desc("buffer_queue_bytes", "Estimated bytes of the messages the sink has not acked.", "pipeline", "sink")
	dQueueOldest    = desc("buffer_queue_oldest_age_seconds", "Age of the oldest message the sink has not acked.", "pipeline", "sink")
	dQueueRedeliver = desc("buffer_redelivered_total", "Deliveries of a buffered message after its first, to the sink.", "pipeline", "sink")
	dQueueExpired   = desc("buffer_expired_total", "Buffered messages older than max_age, not delivered to the sink.", "pipeline", "sink")
	dQueueLost      = desc("buffer_lost_total", "Buffered messages whose payload was missing from the store.", "pipeline", "sink")
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dUp, dReceived, dDone, dFiltered, dUnmatched, dFailed, dDeadLettered, dExprErrors,
		dPublished, dSinkFailed, dRetried, dLoomBuffered, dLoomBufferedBytes, dLoomSent, dLoomResent, dLoomUnconfirmed,
		dLoomDropped, dLoomReconnects, dLoomRoomsWaiting, dLoomHeld, dLoomReceived, dLoomSkipped, dHookAttempts, dHookDelivered, dHookDead, dHookBreaker,
		dLoomReachable, dSinkDead, dConfigInfo, dReloadOK, dLastReloadInfo, dReloads, dUnreadRoom,
		dBufStored, dBufDropped, dBufRejected, dBufBlocked, dQueueMessages, dQueueBytes, dQueueOldest,
		dQueueRedeliver, dQueueExpired, dQueueLost} {
		ch <- d
	}
	c.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	e := (*Engine)(c)
	e.latency.Collect(ch)
	e.mu.Lock()
	defer e.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	emit := func(name string, s PipelineStats, up bool) {
		gauge(dUp, map[bool]float64{true: 1}[up], name)
		counter(dReceived, s.Received, name)
		counter(dDone, s.Done, name)
		counter(dFiltered, s.Filtered, name)
		counter(dUnmatched, s.Unmatched, name)
		counter(dFailed, s.Failed, name)
		counter(dDeadLettered, s.DeadLettered, name)
		counter(dExprErrors, s.ExprErrors, name)
		for sink, ss := range s.Sinks {
			counter(dPublished, ss.Published, name, sink)
			counter(dSinkFailed, ss.Failed, name, sink)
			counter(dRetried, ss.Retried, name, sink)
			counter(dSinkDead, ss.DeadLettered, name, sink)
		}
	}
	for name, s := range e.final {
		if _, running := e.pipelines[name]; !running {
			emit(name, s, false)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for name, r := range e.pipelines {
		emit(name, r.stats.snapshot(), !r.router.IsClosed())
		if b := r.bufferStats(ctx); b != nil {
			counter(dBufStored, b.Stored, name)
			counter(dBufDropped, b.Dropped, name)
			counter(dBufRejected, b.Rejected, name)
			counter(dBufBlocked, b.Blocked, name)
			for sink, q := range b.Queues {
				gauge(dQueueMessages, float64(q.Messages), name, sink)
				gauge(dQueueBytes, float64(q.Bytes), name, sink)
				gauge(dQueueOldest, q.OldestAgeSeconds, name, sink)
				counter(dQueueRedeliver, q.Redelivered, name, sink)
				counter(dQueueExpired, q.Expired, name, sink)
				counter(dQueueLost, q.Lost, name, sink)
			}
		}
		r.eachAdapter(func(where string, a any) {
			sink := strings.TrimPrefix(where, "to.")
			switch a := a.(type) {
			case *loom.Publisher:
				st := a.Stats()
				gauge(dLoomBuffered, float64(st.Buffered), name, sink)
				gauge(dLoomBufferedBytes, float64(st.BufferedBytes), name, sink)
				counter(dLoomSent, st.Sent, name, sink)
				counter(dLoomResent, st.Resent, name, sink)
				counter(dLoomUnconfirmed, st.Unconfirmed, name, sink)
				for reason, n := range st.Dropped {
					counter(dLoomDropped, n, name, sink, string(reason))
				}
				counter(dLoomReconnects, st.Reconnects, name, where)
				gauge(dLoomRoomsWaiting, float64(st.RoomsWaiting), name, sink)
				ch <- prometheus.MustNewConstMetric(dLoomHeld, prometheus.CounterValue, st.Held.Seconds(), name, sink)
			case *loom.Subscriber:
				st := a.Stats()
				counter(dLoomReceived, st.Received, name)
				for reason, n := range map[loom.SkipReason]uint64{loom.SkipTruncated: st.Truncated, loom.SkipTooLarge: st.TooLarge,
					loom.SkipUnreadable: st.Unreadable, loom.SkipUndecodable: st.Undecodable} {
					counter(dLoomSkipped, n, name, string(reason))
				}
				counter(dLoomReconnects, st.Reconnects, name, where)
			case *webhook.Publisher:
				for _, ep := range a.Stats().Endpoints {
					for class, n := range ep.Attempts {
						counter(dHookAttempts, n, name, sink, ep.Name, class)
					}
					counter(dHookDelivered, ep.Delivered, name, sink, ep.Name)
					counter(dHookDead, ep.DeadLettered, name, sink, ep.Name)
					gauge(dHookBreaker, breakerValue(ep.Breaker), name, sink, ep.Name)
				}
			}
		})
	}
	for name, p := range e.probes {
		gauge(dLoomReachable, map[bool]float64{true: 1}[p.up.Load()], name)
	}
	if e.cfg != nil {
		gauge(dConfigInfo, 1, e.cfg.hash)
	}
	ok := e.lastReload == nil || e.lastReload.Result != "refused"
	gauge(dReloadOK, map[bool]float64{true: 1}[ok])
	if lr := e.lastReload; lr != nil {
		gauge(dLastReloadInfo, 1, lr.Result, lr.Hash)
	}
	for _, result := range []string{"applied", "refused"} {
		counter(dReloads, e.reloads[result], result)
	}
	for _, r := range e.emptyRooms {
		gauge(dUnreadRoom, 1, r.Pipeline, r.Sink, r.Connection, r.Room)
	}
}

func breakerValue(state string) float64 {
	switch state {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}

// adapterStats returns an adapter's own Stats(), for /status.
func adapterStats(a any) any {
	switch a := a.(type) {
	case *loom.Publisher:
		return a.Stats()
	case *loom.Subscriber:
		return a.Stats()
	case *webhook.Publisher:
		return a.Stats()
	}
	return nil
}
