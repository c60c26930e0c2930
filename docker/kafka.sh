#!/usr/bin/env bash
# A single-node Apache Kafka broker in KRaft mode (broker and controller in one process), with
# the settings `rendezvous up` gives its local broker (rendezvous/stack/kafka.py). The
# storage is formatted on the first start and kept in /var/lib/kafka (a volume).
#
#   KAFKA_ADVERTISED_HOST  the name clients reach the broker by (default: kafka)
#   KAFKA_PORT             the client port (default: 9092)
#   KAFKA_PARTITIONS       partitions of a new topic (default: 1)
#   KAFKA_HEAP             the JVM heap (default: 512m)
#   KAFKA_PROPERTIES       more server.properties lines, appended as they are
set -euo pipefail

data=/var/lib/kafka
conf=/etc/kafka/server.properties
classpath="/opt/kafka/libs/*"
port="${KAFKA_PORT:-9092}"
heap="${KAFKA_HEAP:-512m}"

cat >"$conf" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:${port},CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST:-kafka}:${port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${data}/logs
num.partitions=${KAFKA_PARTITIONS:-1}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
num.network.threads=1
num.io.threads=2
EOF
if [ -n "${KAFKA_PROPERTIES:-}" ]; then
    printf '%s\n' "$KAFKA_PROPERTIES" >>"$conf"
fi

cat >/etc/kafka/log4j2.yaml <<'EOF'
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
EOF

if [ ! -s "$data/cluster.id" ]; then
    java -cp "$classpath" kafka.tools.StorageTool random-uuid >"$data/cluster.id"
fi
java -cp "$classpath" kafka.tools.StorageTool format -t "$(cat "$data/cluster.id")" \
    -c "$conf" --ignore-formatted >/dev/null

exec java "-Xms${heap}" "-Xmx${heap}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile=/etc/kafka/log4j2.yaml \
    -cp "$classpath" kafka.Kafka "$conf"
