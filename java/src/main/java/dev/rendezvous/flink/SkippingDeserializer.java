package dev.rendezvous.flink;

import java.io.IOException;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.data.RowData;
import org.apache.flink.util.Collector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Decodes values that start with {@code kind}; counts, logs and drops every other one. */
final class SkippingDeserializer implements DeserializationSchema<RowData> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(SkippingDeserializer.class);

    private final DeserializationSchema<RowData> inner;
    private final byte kind;
    private transient Counter skipped;

    SkippingDeserializer(DeserializationSchema<RowData> inner, byte kind) {
        this.inner = inner;
        this.kind = kind;
    }

    @Override
    public void open(InitializationContext context) throws Exception {
        inner.open(context);
        skipped = context.getMetricGroup().counter("rendezvousSkippedRecords");
    }

    @Override
    public RowData deserialize(byte[] message) {
        if (message == null || message.length == 0 || message[0] != kind) {
            skip(message, "not a batch of kind " + kind);
            return null;
        }
        try {
            return inner.deserialize(message);
        } catch (IOException | RuntimeException e) {
            skip(message, e.toString());
            return null;
        }
    }

    @Override
    public void deserialize(byte[] message, Collector<RowData> out) {
        RowData row = deserialize(message);
        if (row != null) {
            out.collect(row);
        }
    }

    private void skip(byte[] message, String why) {
        long n = skipped == null ? 0 : skipped.getCount();
        if (skipped != null) {
            skipped.inc();
        }
        if (n < 10 || Long.bitCount(n) == 1) { // the first ten, then at 16, 32, 64, ...
            LOG.warn(
                    "skipped a value of {} bytes starting with {} ({} skipped so far): {}",
                    message == null ? 0 : message.length,
                    message == null || message.length == 0 ? "nothing" : message[0],
                    n + 1,
                    why);
        }
    }

    @Override
    public boolean isEndOfStream(RowData nextElement) {
        return inner.isEndOfStream(nextElement);
    }

    @Override
    public TypeInformation<RowData> getProducedType() {
        return inner.getProducedType();
    }
}
