package dev.rendezvous.flink;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;

import java.util.Arrays;

/**
 * Writes raw values to one topic, each into the partition its first four bytes name.
 *
 * <p>The rendezvous job prefixes every result batch with the results partition of the proxy
 * replica waiting for it (a big-endian int, see {@code rendezvous.replies.routed}); the prefix is
 * cut off before the value is written. A negative partition leaves the choice to the producer.
 * A partition the topic does not have (the replica was started against a topic with more
 * partitions) is taken modulo the topic's partitions, so the batch is never lost, only read by
 * a replica that may not wait for it.
 */
public final class ReplyRouted implements KafkaRecordSerializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    private final String topic;

    public ReplyRouted(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(
            byte[] element, KafkaSinkContext context, Long timestamp) {
        if (element == null || element.length < 4) {
            throw new IllegalArgumentException(
                    "a reply-routed value starts with its four-byte partition");
        }
        int partition =
                ((element[0] & 0xff) << 24)
                        | ((element[1] & 0xff) << 16)
                        | ((element[2] & 0xff) << 8)
                        | (element[3] & 0xff);
        Integer target = null;
        if (partition >= 0) {
            // Partition IDs are 0..n-1; the metadata's list of them is not guaranteed sorted.
            int partitions = context.getPartitionsForTopic(topic).length;
            target = partitions == 0 ? null : partition % partitions;
        }
        byte[] value = Arrays.copyOfRange(element, 4, element.length);
        return new ProducerRecord<>(topic, target, timestamp, null, value);
    }
}
