package dev.rendezvous.flink;

import java.util.Collections;
import java.util.Set;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.formats.avro.AvroFormatFactory;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;

/**
 * Flink SQL format {@code rdv-batch}: Flink's Avro format for a topic that holds batches of one
 * record kind, which skips every value that is not such a batch instead of failing the job.
 *
 * <p>{@code 'rdv-batch.kind' = '<n>'} names the batch kind (the byte in front of every value, see
 * {@code rendezvous.serde}). A value of another kind, or one that does not decode, is counted in
 * the source's {@code rendezvousSkippedRecords} metric, logged, and dropped: one stray record
 * written to the topic by something else must not stop the archive for good.
 */
public final class BatchAvroFormatFactory implements DeserializationFormatFactory {
    public static final String IDENTIFIER = "rdv-batch";

    public static final ConfigOption<Integer> KIND =
            ConfigOptions.key("kind")
                    .intType()
                    .noDefaultValue()
                    .withDescription("the batch kind byte every value starts with");

    @Override
    public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
            DynamicTableFactory.Context context, ReadableConfig formatOptions) {
        FactoryUtil.validateFactoryOptions(this, formatOptions);
        final byte kind = formatOptions.get(KIND).byteValue();
        final DecodingFormat<DeserializationSchema<RowData>> avro =
                new AvroFormatFactory().createDecodingFormat(context, new Configuration());
        return new DecodingFormat<DeserializationSchema<RowData>>() {
            @Override
            public DeserializationSchema<RowData> createRuntimeDecoder(
                    DynamicTableSource.Context sourceContext, DataType physicalDataType) {
                return new SkippingDeserializer(
                        avro.createRuntimeDecoder(sourceContext, physicalDataType), kind);
            }

            @Override
            public ChangelogMode getChangelogMode() {
                return avro.getChangelogMode();
            }
        };
    }

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Collections.singleton(KIND);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Collections.emptySet();
    }
}
