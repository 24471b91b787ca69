"""The weekly full refresh (off by default: start it under Automation)."""
import dagster as dg

weekly_refresh = dg.ScheduleDefinition(
    name="weekly_refresh", job_name="everything_job", cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Mondays 03:00: materialize everything (off by default; start it in the UI)")
