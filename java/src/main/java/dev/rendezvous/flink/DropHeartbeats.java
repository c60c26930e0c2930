package dev.rendezvous.flink;

import org.apache.flink.api.common.functions.FilterFunction;

/**
 * Drops heartbeats from a stream of raw Kafka values, in the JVM.
 *
 * <p>A heartbeat is an empty batch: its kind byte, an empty ID (Avro length 0) and an empty
 * array (Avro count 0), three bytes in all (see {@code rendezvous.serde.empty_batch}). Its broker
 * timestamp is all it carries, and the watermark has read that timestamp at the source, before
 * this filter; so the Python operators downstream see only records with something in them.
 */
public final class DropHeartbeats implements FilterFunction<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public boolean filter(byte[] value) {
        return !(value != null && value.length == 3 && value[1] == 0 && value[2] == 0);
    }
}
