from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("products", "0004_product_detector_method"),
    ]

    operations = [
        migrations.AddField(
            model_name="supportset",
            name="progress",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="supportset",
            name="progress_message",
            field=models.CharField(blank=True, max_length=200),
        ),
    ]
