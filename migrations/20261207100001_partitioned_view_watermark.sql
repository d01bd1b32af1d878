-- LMS-01-008's partitions (`--partition I/N`) refresh the teacher view for
-- their own students, each from a watermark of its own: '' for an
-- unpartitioned run, else 'I/N'.
ALTER TABLE batch_view_watermark ADD COLUMN part text NOT NULL DEFAULT '';
ALTER TABLE batch_view_watermark DROP CONSTRAINT batch_view_watermark_pkey;
ALTER TABLE batch_view_watermark ADD PRIMARY KEY (job_id, part);
