package agent

import (
	"context"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// The model update's MQTT side: model/available in (the station's topic and the line's,
// both retained, so a station that was offline finds the latest announcement when it
// connects) and model/status out (retained, QoS 1; repeated at every connect so that the
// broker always holds the station's latest step).

// modelSubscriptions adds the model/available subscriptions when updates are on.
func (r *mqttRole) modelSubscriptions(subs map[string]func(cloudsync.Received)) {
	if r.hooks.modelAvailable == nil {
		return
	}
	subs[r.topics.Topic(wire.TopicModelAvailable)] = r.onModelAvailable
	subs[r.topics.LineModelAvailable()] = r.onModelAvailable
}

// onModelAvailable decodes an announcement and hands it to the updater. A malformed one is
// answered on error; an empty retained message (an announcement withdrawn) is ignored.
func (r *mqttRole) onModelAvailable(msg cloudsync.Received) {
	if len(msg.Payload) == 0 {
		return
	}
	var m wire.ModelAvailableMsg
	if err := wire.Decode(msg.Payload, &m); err != nil {
		r.reject(msg, "", err)
		return
	}
	r.log.Info().Str("topic", msg.Topic).Str("name", m.Name).Str("version", m.Version).Str("key", m.Key).Msg("model available")
	r.hooks.modelAvailable(m)
}

// publishModelStatus publishes m on model/status, retained.
func (r *mqttRole) publishModelStatus(ctx context.Context, m wire.ModelStatusMsg) {
	data, err := wire.Encode(&m)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		err = r.conn.Publish(pctx, cloudsync.Publication{Topic: r.topics.Topic(wire.TopicModelStatus), Payload: data, Retained: true})
		cancel()
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Str("state", m.State).Msg("model/status not published (repeated at the next connect)")
	}
}

// onConnectModel repeats the last model update status after a (re)connect.
func (r *mqttRole) onConnectModel(ctx context.Context) {
	if r.hooks.modelStatus == nil {
		return
	}
	if m := r.hooks.modelStatus(); m != nil {
		r.publishModelStatus(ctx, *m)
	}
}
